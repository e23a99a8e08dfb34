//! What an index is: its method and parameters ([`IndexSpec`]), parsed from
//! `CREATE INDEX ... USING method (column opclass) WITH (...)`.

use super::*;

/// The index method and its build parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Flat,
    IvfFlat {
        lists: usize,
    },
    IvfSq8 {
        lists: usize,
    },
    IvfPq {
        lists: usize,
        m: usize,
        nbits: usize,
    },
    Hnsw {
        m: usize,
        ef_construction: usize,
        /// Fill each node's level-0 neighbour list up to its 2·m slots
        /// with the nearest candidates the diversity heuristic pruned, as
        /// pgvector does (the paper's keepPrunedConnections). The graph
        /// costs about twice as long to build. On fashion-mnist and a
        /// generated 1M x 128 set it answers with the same recall at a
        /// smaller ef; on tightly clustered data its recall at ef 64 is
        /// lower and varies more between builds, so it is off by default.
        #[serde(default)]
        keep_pruned: bool,
    },
    /// Exhaustive search over bit strings (faiss `IndexBinaryFlat`).
    BinFlat,
    /// Inverted lists over bit strings (faiss `IndexBinaryIVF`).
    BinIvfFlat {
        lists: usize,
    },
}

impl Method {
    /// Whether the distances a search returns are computed from the
    /// vectors themselves (not from quantised codes): equal, up to float
    /// rounding, to the exact distances of the rows.
    pub fn exact_distances(&self) -> bool {
        matches!(
            self,
            Method::Flat | Method::IvfFlat { .. } | Method::Hnsw { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Flat => "flat",
            Method::IvfFlat { .. } => "ivf_flat",
            Method::IvfSq8 { .. } => "ivf_sq8",
            Method::IvfPq { .. } => "ivf_pq",
            Method::Hnsw { .. } => "hnsw",
            Method::BinFlat => "bin_flat",
            Method::BinIvfFlat { .. } => "bin_ivf_flat",
        }
    }

    /// The build parameters as `WITH (...)` would name them.
    pub fn params(&self) -> String {
        match self {
            Method::Flat | Method::BinFlat => String::new(),
            Method::IvfFlat { lists } | Method::IvfSq8 { lists } | Method::BinIvfFlat { lists } => {
                format!("lists={lists}")
            }
            Method::IvfPq { lists, m, nbits } => format!("lists={lists}, m={m}, nbits={nbits}"),
            Method::Hnsw {
                m,
                ef_construction,
                keep_pruned,
            } => {
                format!("m={m}, ef_construction={ef_construction}, keep_pruned={keep_pruned}")
            }
        }
    }

    /// IVF lists are capped by the rows a segment has to train on.
    pub(super) fn factory(&self, rows: usize) -> String {
        let lists = |l: usize| l.min((rows / 39).max(1)).max(1);
        match self {
            Method::Flat => "Flat".into(),
            Method::IvfFlat { lists: l } => format!("IVF{},Flat", lists(*l)),
            Method::IvfSq8 { lists: l } => format!("IVF{},SQ8", lists(*l)),
            // Product quantization trains 2^nbits centroids per
            // sub-vector and needs that many rows: a smaller segment keeps
            // its vectors whole (exact within the probed lists).
            Method::IvfPq {
                lists: l, nbits, ..
            } if rows < (1usize << *nbits) => {
                format!("IVF{},Flat", lists(*l))
            }
            Method::IvfPq { lists: l, m, nbits } => format!("IVF{},PQ{m}x{nbits}", lists(*l)),
            Method::Hnsw { m, .. } => format!("HNSW{m},Flat"),
            Method::BinFlat => "BFlat".into(),
            Method::BinIvfFlat { lists: l } => format!("BIVF{}", lists(*l)),
        }
    }

    pub(super) fn is_ivf(&self) -> bool {
        matches!(
            self,
            Method::IvfFlat { .. } | Method::IvfSq8 { .. } | Method::IvfPq { .. }
        )
    }

    /// Whether the method indexes bit strings.
    pub fn is_binary(&self) -> bool {
        matches!(self, Method::BinFlat | Method::BinIvfFlat { .. })
    }
}

/// What an index is: its method, metric and dimension (stored in the
/// catalog; the factory is keyed by the method name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    pub method: Method,
    pub metric: Metric,
    pub dim: usize,
}

pub(super) const METHODS: &str = "flat, ivf_flat, ivf_sq8, ivf_pq, hnsw, bin_flat, bin_ivf_flat";

/// The metric of a pgvector operator class.
pub fn metric_of_opclass(opclass: &str) -> Result<Metric, IndexError> {
    match opclass.to_ascii_lowercase().as_str() {
        "vector_l2_ops" => Ok(Metric::L2),
        "vector_ip_ops" => Ok(Metric::NegativeInnerProduct),
        "vector_cosine_ops" => Ok(Metric::Cosine),
        "bit_hamming_ops" => Ok(Metric::Hamming),
        "bit_jaccard_ops" => Ok(Metric::Jaccard),
        other => Err(IndexError::Unknown(format!(
            "operator class \"{other}\" does not exist for vector indexes: use vector_l2_ops, vector_ip_ops or vector_cosine_ops (vector columns), bit_hamming_ops or bit_jaccard_ops (bit columns)"
        ))),
    }
}

impl IndexSpec {
    /// Check a `CREATE INDEX ... USING method (col opclass) WITH (options)`.
    /// Options not about the build (e.g. `wait`) must be removed first.
    pub fn parse(
        method: &str,
        metric: Metric,
        dim: usize,
        options: &BTreeMap<String, String>,
    ) -> Result<IndexSpec, IndexError> {
        let allowed: &[&str] = match method {
            "flat" => &[],
            "ivf_flat" | "ivfflat" | "ivf_sq8" => &["lists"],
            "ivf_pq" => &["lists", "m", "nbits"],
            "hnsw" => &["m", "ef_construction", "keep_pruned"],
            "bin_flat" => &[],
            "bin_ivf_flat" => &["lists"],
            other => {
                return Err(IndexError::UnknownMethod(format!(
                    "access method \"{other}\" does not exist: use one of {METHODS}"
                )));
            }
        };
        if let Some(k) = options.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(IndexError::InvalidParameter(format!(
                "unrecognized parameter \"{k}\" for {method}: allowed are {}",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        let int = |name: &str,
                   default: usize,
                   min: usize,
                   max: usize|
         -> Result<usize, IndexError> {
            let Some(v) = options.get(name) else {
                return Ok(default);
            };
            match v.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(IndexError::InvalidParameter(format!(
                    "value {v} out of bounds for option \"{name}\": must be an integer from {min} to {max}"
                ))),
            }
        };
        if metric == Metric::L1 {
            return Err(IndexError::InvalidParameter(
                "vector indexes support vector_l2_ops, vector_ip_ops and vector_cosine_ops".into(),
            ));
        }
        // pgvector's spelling on bit columns: ivfflat (and flat) with a bit
        // operator class are the binary methods.
        let method = match (method, metric.is_binary()) {
            ("flat", true) => "bin_flat",
            ("ivf_flat" | "ivfflat", true) => "bin_ivf_flat",
            ("bin_flat" | "bin_ivf_flat", false) => {
                return Err(IndexError::WrongType(format!(
                    "{method} indexes bit columns, with bit_hamming_ops or bit_jaccard_ops"
                )));
            }
            ("bin_flat" | "bin_ivf_flat", true) => method,
            (_, true) => {
                return Err(IndexError::WrongType(format!(
                    "{method} does not index bit columns: use bin_flat or bin_ivf_flat"
                )));
            }
            (m, false) => m,
        };
        let method = match method {
            "flat" => Method::Flat,
            "bin_flat" => Method::BinFlat,
            "bin_ivf_flat" => Method::BinIvfFlat {
                lists: int("lists", 100, 1, 32768)?,
            },
            "ivf_flat" | "ivfflat" => Method::IvfFlat {
                lists: int("lists", 100, 1, 32768)?,
            },
            "ivf_sq8" => Method::IvfSq8 {
                lists: int("lists", 100, 1, 32768)?,
            },
            "ivf_pq" => {
                let m = int("m", (dim / 4).max(1), 1, dim)?;
                if !dim.is_multiple_of(m) {
                    return Err(IndexError::InvalidParameter(format!(
                        "ivf_pq: m = {m} must divide the dimension {dim}"
                    )));
                }
                Method::IvfPq {
                    lists: int("lists", 100, 1, 32768)?,
                    m,
                    nbits: int("nbits", 8, 1, 16)?,
                }
            }
            _ => Method::Hnsw {
                m: int("m", 16, 2, 100)?,
                ef_construction: int("ef_construction", 64, 4, 1000)?,
                keep_pruned: match options.get("keep_pruned") {
                    None => false,
                    Some(v) => bool_option("keep_pruned", v)?,
                },
            },
        };
        Ok(IndexSpec {
            method,
            metric,
            dim,
        })
    }

    pub(super) fn faiss_metric(&self) -> MetricType {
        match self.metric {
            Metric::L2 => MetricType::L2,
            _ => MetricType::InnerProduct,
        }
    }

    /// The faiss range-search radius (squared L2: rows below it; inner
    /// product: rows above it) that takes in every row within `distance`,
    /// with a little to spare for rounding.
    pub(super) fn faiss_radius(&self, distance: f32) -> f32 {
        let slack = 1e-4 * distance.abs() + 1e-6;
        match self.metric {
            Metric::L2 => (distance.max(0.0) * distance.max(0.0)) * (1.0 + 1e-4) + 1e-6,
            Metric::NegativeInnerProduct => -distance - slack,
            Metric::Cosine => 1.0 - distance - slack,
            Metric::L1 | Metric::Hamming | Metric::Jaccard => distance + slack,
        }
    }

    /// A faiss score as the pgvector distance of this metric.
    pub fn distance(&self, score: f32) -> f32 {
        match self.metric {
            Metric::L2 => score.max(0.0).sqrt(),
            Metric::NegativeInnerProduct => -score,
            Metric::Cosine => 1.0 - score,
            Metric::L1 | Metric::Hamming | Metric::Jaccard => score,
        }
    }
}

/// A boolean `WITH (...)` option, spelled as PostgreSQL accepts it.
pub fn bool_option(name: &str, value: &str) -> Result<bool, IndexError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        _ => Err(IndexError::InvalidParameter(format!(
            "invalid value for option \"{name}\": \"{value}\" (true or false)"
        ))),
    }
}

pub(super) fn normalized(vectors: &[f32], dim: usize) -> Vec<f32> {
    let mut out = vectors.to_vec();
    for v in out.chunks_mut(dim) {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    out
}
