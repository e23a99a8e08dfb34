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
    /// HNSW over scalar-quantised vectors (faiss `IndexHNSWSQ`, Milvus's
    /// `HNSW_SQ`): the graph of [`Method::Hnsw`] over codes of 1 byte (or
    /// less, or a 16-bit float) per dimension instead of 4. Its distances
    /// are approximate: a search fetches `refine_k` × k candidates and
    /// ranks them again by their exact distances from the stored rows.
    HnswSq {
        m: usize,
        ef_construction: usize,
        sq: SqType,
    },
    /// Inverted lists of RaBitQ codes (faiss `IndexIVFRaBitQ`, Milvus's
    /// `IVF_RABITQ`): one bit per dimension plus two floats per row, about
    /// 30 times smaller than the vectors; re-ranked from the stored rows
    /// as [`Method::HnswSq`].
    IvfRabitq {
        lists: usize,
    },
    /// Exhaustive search over bit strings (faiss `IndexBinaryFlat`).
    BinFlat,
    /// Inverted lists over bit strings (faiss `IndexBinaryIVF`).
    BinIvfFlat {
        lists: usize,
    },
}

/// The codes of an [`Method::HnswSq`] index (Milvus's `sq_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqType {
    Sq6,
    Sq8,
    Fp16,
    Bf16,
}

impl SqType {
    pub fn name(self) -> &'static str {
        match self {
            SqType::Sq6 => "sq6",
            SqType::Sq8 => "sq8",
            SqType::Fp16 => "fp16",
            SqType::Bf16 => "bf16",
        }
    }

    fn parse(value: &str) -> Result<SqType, IndexError> {
        match value.to_ascii_lowercase().as_str() {
            "sq6" => Ok(SqType::Sq6),
            "sq8" => Ok(SqType::Sq8),
            "fp16" => Ok(SqType::Fp16),
            "bf16" => Ok(SqType::Bf16),
            _ => Err(IndexError::InvalidParameter(format!(
                "invalid value for option \"sq_type\": \"{value}\" (sq6, sq8, fp16 or bf16)"
            ))),
        }
    }

    /// faiss's name for the quantiser, in an index factory string.
    fn factory(self) -> &'static str {
        match self {
            SqType::Sq6 => "SQ6",
            SqType::Sq8 => "SQ8",
            SqType::Fp16 => "SQfp16",
            SqType::Bf16 => "SQbf16",
        }
    }
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

    /// How many candidates per row asked for a search fetches, to rank
    /// them again by their exact distances, when the session does not say
    /// (`quiver.refine_k`, `SEARCH ... WITH (refine_k = n)`): 1 where the
    /// index's distances are exact (and for `ivf_sq8`/`ivf_pq`, which
    /// rank by their codes as before); 2 for 8-bit and 16-bit codes, whose
    /// order is nearly exact, 3 for 6-bit ones; 20 for one bit per
    /// dimension (on the recall tests' clustered data its own first 10 hold
    /// about 0.75 of the true 10 by L2 and 0.6 by inner product, 100
    /// candidates ranked again 1.0; on the scale benchmark's Gaussian
    /// mixture of 128 dimensions 100 candidates give 0.88, 200 give 0.96,
    /// 500 give 0.99).
    pub fn default_refine(&self) -> usize {
        match self {
            Method::HnswSq { sq, .. } => match sq {
                SqType::Sq6 => 3,
                _ => 2,
            },
            Method::IvfRabitq { .. } => 20,
            _ => 1,
        }
    }

    /// Candidates per row asked for under `knobs` (see
    /// [`Method::default_refine`]).
    pub fn refine(&self, knobs: SearchKnobs) -> usize {
        if self.exact_distances() {
            1
        } else if knobs.refine > 0 {
            knobs.refine
        } else {
            self.default_refine()
        }
    }

    /// Whether the index is an HNSW graph (ef applies).
    pub fn is_hnsw(&self) -> bool {
        matches!(self, Method::Hnsw { .. } | Method::HnswSq { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Flat => "flat",
            Method::HnswSq { .. } => "hnsw_sq",
            Method::IvfRabitq { .. } => "ivf_rabitq",
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
            Method::IvfFlat { lists }
            | Method::IvfSq8 { lists }
            | Method::IvfRabitq { lists }
            | Method::BinIvfFlat { lists } => {
                format!("lists={lists}")
            }
            Method::HnswSq {
                m,
                ef_construction,
                sq,
            } => format!(
                "m={m}, ef_construction={ef_construction}, sq_type={}",
                sq.name()
            ),
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
            Method::HnswSq { m, sq, .. } => format!("HNSW{m},{}", sq.factory()),
            Method::IvfRabitq { lists: l } => format!("IVF{},RaBitQ", lists(*l)),
            Method::BinFlat => "BFlat".into(),
            Method::BinIvfFlat { lists: l } => format!("BIVF{}", lists(*l)),
        }
    }

    pub(super) fn is_ivf(&self) -> bool {
        matches!(
            self,
            Method::IvfFlat { .. }
                | Method::IvfSq8 { .. }
                | Method::IvfPq { .. }
                | Method::IvfRabitq { .. }
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

pub(super) const METHODS: &str =
    "flat, ivf_flat, ivf_sq8, ivf_pq, ivf_rabitq, hnsw, hnsw_sq, bin_flat, bin_ivf_flat";

/// The metric of a pgvector operator class.
pub fn metric_of_opclass(opclass: &str) -> Result<Metric, IndexError> {
    match opclass.to_ascii_lowercase().as_str() {
        "vector_l2_ops" => Ok(Metric::L2),
        "vector_ip_ops" => Ok(Metric::NegativeInnerProduct),
        "vector_cosine_ops" => Ok(Metric::Cosine),
        "vector_l1_ops" => Ok(Metric::L1),
        "bit_hamming_ops" => Ok(Metric::Hamming),
        "bit_jaccard_ops" => Ok(Metric::Jaccard),
        other => Err(IndexError::Unknown(format!(
            "operator class \"{other}\" does not exist for vector indexes: use vector_l2_ops, vector_ip_ops, vector_cosine_ops or vector_l1_ops (vector columns), bit_hamming_ops or bit_jaccard_ops (bit columns)"
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
            "ivf_flat" | "ivfflat" | "ivf_sq8" | "ivf_rabitq" => &["lists"],
            "hnsw_sq" => &["m", "ef_construction", "sq_type"],
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
        // L1 as pgvector has it: HNSW only (and quiver's flat, a scan).
        if metric == Metric::L1 && !matches!(method, "hnsw" | "flat") {
            return Err(IndexError::Unknown(format!(
                "operator class \"vector_l1_ops\" does not exist for access method \"{method}\""
            )));
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
            "ivf_rabitq" => Method::IvfRabitq {
                lists: int("lists", 100, 1, 32768)?,
            },
            "hnsw_sq" => Method::HnswSq {
                m: int("m", 16, 2, 100)?,
                ef_construction: int("ef_construction", 64, 4, 1000)?,
                sq: match options.get("sq_type") {
                    None => SqType::Sq8,
                    Some(v) => SqType::parse(v)?,
                },
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

    /// faiss's code for the metric the index is built with (cosine:
    /// inner product over normalised vectors).
    pub(super) fn faiss_metric(&self) -> u32 {
        match self.metric {
            Metric::L2 => MetricType::L2.code(),
            Metric::L1 => faiss_sys::FaissMetricType_METRIC_L1,
            _ => MetricType::InnerProduct.code(),
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
