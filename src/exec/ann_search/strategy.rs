//! The per-segment search strategy: a sealed segment with a loaded index of
//! the query's metric is searched through it (widening ef/nprobe until k rows
//! pass the filter), anything else exactly; hits merge into one top-k.

use super::*;

/// What every segment's search shares.
#[derive(Clone, Copy)]
pub(super) struct SearchCtx<'a> {
    pub(super) spec: &'a AnnSearchSpec,
    pub(super) chunks: &'a [Chunk<'a>],
    pub(super) masks: &'a [Option<BooleanArray>],
    pub(super) knobs: SearchKnobs,
    pub(super) metrics: &'a SearchMetrics,
}

/// Search one sealed segment through its index. The rows that pass are a
/// bitmap over the segment: HNSW walks its graph with it (counting only
/// passing rows, giving up for an exact scan when that would be cheaper),
/// IVF and flat indexes take it as faiss's ID selector and widen (nprobe
/// ×2) until they return every row they should. Returns `Err(why)` when
/// the segment is better searched exactly.
pub(super) fn by_index(
    ctx: &SearchCtx,
    seg: &SegmentPlan,
    index: &LoadedIndex,
    top: &mut TopK,
) -> Result<std::result::Result<usize, &'static str>> {
    let SearchCtx {
        spec,
        chunks,
        masks,
        knobs,
        metrics,
    } = *ctx;
    let range = seg.first_chunk..seg.first_chunk + seg.chunks;
    let total: usize = range.clone().map(|c| chunks[c].batch.num_rows()).sum();
    if total != index.index.len() {
        return Ok(Err("exact: the index covers other rows"));
    }
    // Nothing deleted, filtered out or NULL: search the index as it is.
    let untouched = range.clone().all(|ci| {
        masks[ci].is_none()
            && chunks[ci]
                .batch
                .column(spec.vector_column)
                .logical_null_count()
                == 0
    });
    // Otherwise: the passing rows with a vector, as a bitmap over the segment.
    let mut bits = arrow::array::BooleanBufferBuilder::new(if untouched { 0 } else { total });
    for ci in range.clone().filter(|_| !untouched) {
        let n = chunks[ci].batch.num_rows();
        let (_, nulls) = column_of(spec, &chunks[ci])?;
        let pass = match (&masks[ci], &nulls) {
            (None, None) => BooleanBuffer::new_set(n),
            (Some(m), None) => m.values().clone(),
            (None, Some(nb)) => nb.inner().clone(),
            (Some(m), Some(nb)) => m.values() & nb.inner(),
        };
        // Rows with a NULL vector that pass: the tail of the answer.
        if let Some(nb) = &nulls {
            for row in (0..n).filter(|r| nb.is_null(*r)) {
                if top.null_rows.len() >= top.k {
                    break;
                }
                if masks[ci].as_ref().is_none_or(|m| m.value(row)) {
                    top.null_rows.push((ci, row));
                }
            }
        }
        bits.append_buffer(&pass);
    }
    let bits = bits.finish();
    let bitmap: &[u8] = bits.values();
    let passing = if untouched {
        total
    } else {
        bits.count_set_bits()
    };
    if passing == 0 {
        return Ok(Ok(0));
    }
    // A filtered HNSW walk gives up for an exact scan by itself once it
    // costs more than half that scan, so it is tried down to fewer rows.
    let (below_rows, below_fraction) = match index.index.spec().method {
        Method::Hnsw { .. } | Method::HnswSq { .. } if spec.range.is_none() => {
            (WALK_BELOW_ROWS, WALK_BELOW_FRACTION)
        }
        _ => (EXACT_BELOW_ROWS, EXACT_BELOW_FRACTION),
    };
    if passing < below_rows || passing * below_fraction < total {
        return Ok(Err("exact: few rows pass the filter"));
    }
    let selector = (passing < total).then_some(bitmap);
    let want = top.k.min(passing);
    // Quantised codes rank approximately: more candidates are fetched and
    // ranked again by their exact distances (`offer_hits`).
    let fetch_k = top
        .k
        .saturating_mul(index.index.spec().method.refine(knobs));
    let passes = |row: u64| selector.is_none() || bitmap[row as usize / 8] & (1 << (row % 8)) != 0;
    let is_hnsw = index.index.spec().method.is_hnsw();
    if let Query::Bits { .. } = spec.query {
        if spec.range.is_some() {
            return Ok(Err("exact: range search over bit strings"));
        }
        if spec.metric == Metric::Jaccard && index.index.spec().method == Method::BinFlat {
            return Ok(Err("exact: bin_flat scans every row for jaccard"));
        }
    }
    let Query::Float(query) = &spec.query else {
        let filter: Option<&dyn Fn(u64) -> bool> =
            selector.map(|_| &passes as &dyn Fn(u64) -> bool);
        return by_bit_index(ctx, seg, index, top, filter, passing, total);
    };
    if let Some(range) = spec.range {
        let hits = if is_hnsw {
            // faiss's HNSW range search keeps to its ef nearest candidates:
            // fetch the nearest instead, more until k pass or the farthest
            // fetched lies beyond the radius.
            let mut fetch = first_fetch(top.k, passing, total);
            let mut found = None;
            for _ in 0..12 {
                fetch = fetch.min(total);
                let raw = nearest(index, query, fetch, knobs)?;
                let beyond = range.upper.is_some_and(|(u, _)| {
                    raw.last()
                        .is_some_and(|(_, d)| !range.roughly_contains(*d) && *d as f64 > u)
                });
                let exhausted = raw.len() < fetch || fetch >= total;
                let hits: Vec<(u64, f32)> = raw
                    .into_iter()
                    .filter(|(r, d)| passes(*r) && range.roughly_contains(*d))
                    .collect();
                let inside = hits
                    .iter()
                    .filter(|(_, d)| range.contains(*d as f64))
                    .count();
                if inside >= want || beyond || exhausted {
                    found = Some(hits);
                    break;
                }
                if fetch >= MAX_FETCH {
                    break;
                }
                metrics.widened.add(1);
                fetch *= 2;
            }
            match found {
                Some(hits) => hits,
                None => return Ok(Err("exact: too few candidates within range")),
            }
        } else if let Some((radius, _)) = range.upper {
            // IVF and flat: faiss finds every row within the radius in the
            // lists it probes; rows failing the filter are dropped here.
            index
                .index
                .range_search(query, radius as f32, knobs)
                .map_err(|e| DataFusionError::External(Box::new(StorageError::Index(e))))?
                .into_iter()
                .filter(|(r, _)| passes(*r))
                .collect()
        } else {
            // Only a lower bound: the index offers nothing better.
            return Ok(Err("exact: a lower bound only"));
        };
        metrics.index_candidates.add(hits.len());
        offer_hits(ctx, seg, index, &hits, top)?;
        return Ok(Ok(hits.len()));
    }
    let mut knobs = knobs;
    let mut hits = Vec::new();
    // A filtered walk of the graph, where the index has one.
    let walked = match selector {
        Some(allowed) => {
            let fraction = passing as f64 / total as f64;
            // Past half the cost of scoring every passing row, an exact
            // scan is cheaper (its reads are sequential).
            let budget = (passing / 2).max(8 * knobs.ef.max(top.k));
            index
                .index
                .search_filtered(query, fetch_k, knobs, allowed, fraction, budget)
                .map_err(|e| DataFusionError::External(Box::new(StorageError::Index(e))))?
        }
        None => Filtered::Unsupported,
    };
    match walked {
        Filtered::Hits { hits, scored } if hits.len() >= want => {
            metrics.index_candidates.add(hits.len());
            offer_hits(ctx, seg, index, &hits, top)?;
            return Ok(Ok(scored));
        }
        Filtered::Hits { scored, .. } => {
            metrics.scored.add(scored);
            return Ok(Err("exact: the filtered walk found too few rows"));
        }
        Filtered::GaveUp { scored } => {
            metrics.scored.add(scored);
            return Ok(Err("exact: the filtered walk gave up"));
        }
        Filtered::Unsupported => {}
    }
    if !index.index.filters_in_search() && selector.is_some() {
        // faiss's HNSW walks poorly around rows its selector rejects (its
        // recall drops to about the passing fraction), so HNSW searches
        // unfiltered for enough candidates and filters them here, fetching
        // more until k pass.
        let mut fetch = first_fetch(fetch_k, passing, total);
        for attempt in 0..12 {
            fetch = fetch.min(total);
            let raw = nearest(index, query, fetch, knobs)?;
            hits = raw.into_iter().filter(|(r, _)| passes(*r)).collect();
            if hits.len() >= fetch_k.min(passing) || fetch >= total || fetch >= MAX_FETCH {
                break;
            }
            if attempt == 0 {
                metrics.widened.add(1);
            }
            fetch *= 2;
        }
        hits.truncate(fetch_k);
    } else {
        for attempt in 0..12 {
            hits = index
                .index
                .search(query, fetch_k, knobs, selector)
                .map_err(|e| DataFusionError::External(Box::new(StorageError::Index(e))))?;
            if hits.len() >= want {
                break;
            }
            if attempt == 0 {
                metrics.widened.add(1);
            }
            if knobs.ef >= total && knobs.nprobe >= 65536 {
                break;
            }
            knobs.ef = (knobs.ef * 2).min(total.max(1));
            knobs.nprobe = (knobs.nprobe * 2).min(65536);
        }
    }
    if hits.len() < want {
        return Ok(Err("exact: the index found too few rows"));
    }
    metrics.index_candidates.add(hits.len());
    offer_hits(ctx, seg, index, &hits, top)?;
    Ok(Ok(want))
}

/// Search one sealed segment through a bit-string index. faiss's binary
/// indexes take no ID selector: with a filter, unfiltered candidates are
/// fetched and filtered here, more (and more lists probed) until k pass.
pub(super) fn by_bit_index(
    ctx: &SearchCtx,
    seg: &SegmentPlan,
    index: &LoadedIndex,
    top: &mut TopK,
    passes: Option<&dyn Fn(u64) -> bool>,
    passing: usize,
    total: usize,
) -> Result<std::result::Result<usize, &'static str>> {
    let Query::Bits { bytes, .. } = &ctx.spec.query else {
        return Ok(Err("exact"));
    };
    let want = top.k.min(passing);
    let mut knobs = ctx.knobs;
    let mut fetch = match passes {
        Some(_) => first_fetch(top.k, passing, total),
        None => top.k,
    };
    let mut hits: Vec<(u64, f32)> = Vec::new();
    for attempt in 0..12 {
        fetch = fetch.min(total);
        hits = index
            .index
            .search_bits(bytes, fetch, knobs)
            .map_err(|e| DataFusionError::External(Box::new(StorageError::Index(e))))?;
        if let Some(passes) = passes {
            hits.retain(|(r, _)| passes(*r));
        }
        if hits.len() >= want || (fetch >= total && knobs.nprobe >= 65536) {
            break;
        }
        if attempt == 0 {
            ctx.metrics.widened.add(1);
        }
        fetch = (fetch * 2).min(MAX_FETCH.max(top.k));
        knobs.nprobe = (knobs.nprobe * 2).min(65536);
    }
    if hits.len() < want {
        return Ok(Err("exact: the index found too few rows"));
    }
    ctx.metrics.index_candidates.add(hits.len());
    offer_hits(ctx, seg, index, &hits, top)?;
    Ok(Ok(hits.len()))
}

/// How many unfiltered candidates an HNSW search fetches first so that
/// about `k` of them pass when `passing` of `total` rows do.
pub(super) fn first_fetch(k: usize, passing: usize, total: usize) -> usize {
    let fraction = passing as f64 / total as f64;
    ((k as f64 / fraction) * 2.0).ceil() as usize + 10
}

/// The `fetch` nearest rows of the index, unfiltered, with an ef of at
/// least `fetch`.
pub(super) fn nearest(
    index: &LoadedIndex,
    query: &[f32],
    fetch: usize,
    knobs: SearchKnobs,
) -> Result<Vec<(u64, f32)>> {
    let knobs = SearchKnobs {
        ef: knobs.ef.max(fetch),
        ..knobs
    };
    index
        .index
        .search(query, fetch, knobs, None)
        .map_err(|e| DataFusionError::External(Box::new(StorageError::Index(e))))
}

/// Offer index hits (segment offsets, with the index's distances) to
/// `top`. Hits of an index whose distances are exact (flat, IVF-flat, HNSW
/// over float vectors) for L2 or inner product keep those distances as
/// their score; others are scored again from the rows (quantised codes give
/// approximate distances, cosine scores a zero vector as NaN where the
/// index sees a normalised one, and a range is checked on exact distances).
pub(super) fn offer_hits(
    ctx: &SearchCtx,
    seg: &SegmentPlan,
    index: &LoadedIndex,
    hits: &[(u64, f32)],
    top: &mut TopK,
) -> Result<()> {
    let trusted = ctx.spec.range.is_none()
        && index.index.spec().method.exact_distances()
        && index.index.spec().metric == ctx.spec.metric;
    let score_of: Option<fn(f32) -> f32> = match ctx.spec.metric {
        Metric::L2 if trusted => Some(|d| d * d),
        Metric::NegativeInnerProduct if trusted => Some(|d| d),
        _ => None,
    };
    let range = seg.first_chunk..seg.first_chunk + seg.chunks;
    let starts: Vec<usize> = range
        .clone()
        .scan(0usize, |acc, c| {
            let s = *acc;
            *acc += ctx.chunks[c].batch.num_rows();
            Some(s)
        })
        .collect();
    let scorer = Scorer::new(ctx.spec);
    for &(row, distance) in hits {
        let row = row as usize;
        let local = starts.partition_point(|s| *s <= row) - 1;
        let ci = seg.first_chunk + local;
        let r = row - starts[local];
        if let Some(score_of) = score_of {
            top.offer(Candidate {
                score: score_of(distance),
                chunk: ci,
                row: r,
            });
            continue;
        }
        let (column, _) = column_of(ctx.spec, &ctx.chunks[ci])?;
        let score = scorer.score(&column, r);
        if ctx
            .spec
            .range
            .is_some_and(|range| !range.contains(scorer.distance(&column, r)))
        {
            continue;
        }
        top.offer(Candidate {
            score,
            chunk: ci,
            row: r,
        });
    }
    Ok(())
}

/// Run the search over every segment and merge the per-segment top-k.
pub(super) fn search(
    spec: &AnnSearchSpec,
    chunks: &[Chunk<'_>],
    segments: &[SegmentPlan],
    knobs: SearchKnobs,
    metrics: &SearchMetrics,
    schema: SchemaRef,
) -> Result<(RecordBatch, Vec<SegmentReport>)> {
    let k = spec.k;
    let mut reports = Vec::with_capacity(segments.len());
    let masks = masks_of(spec, chunks, segments)?;
    let mut top = TopK {
        k,
        // LIMIT may be anything up to i64::MAX: the heap grows with the
        // rows, and a huge k only reserves a little up front.
        heap: BinaryHeap::with_capacity(k.saturating_add(1).min(1 << 16)),
        null_rows: Vec::new(),
    };
    for seg in segments {
        let started = std::time::Instant::now();
        let range = seg.first_chunk..seg.first_chunk + seg.chunks;
        let searched = match &seg.index {
            Some(index) if k > 0 => {
                let ctx = SearchCtx {
                    spec,
                    chunks,
                    masks: &masks,
                    knobs,
                    metrics,
                };
                by_index(&ctx, seg, index, &mut top)?
            }
            Some(_) => Err("exact"),
            None if spec.index.is_none() => Err("exact"),
            None if seg.state == "growing" => Err("exact"),
            None => Err("exact: index not built yet"),
        };
        let (strategy, scored) = match searched {
            Ok(n) => {
                metrics.index_segments.add(1);
                let strategy = if spec.range.is_some() {
                    "index range search"
                } else {
                    "index"
                };
                (strategy, n)
            }
            Err(strategy) => {
                metrics.exact_segments.add(1);
                // Rows with NULL vectors may have been noted already.
                top.null_rows.retain(|(c, _)| !range.contains(c));
                let n = exact(spec, chunks, &masks, range.clone(), &mut top)?;
                (strategy, n)
            }
        };
        metrics.scored.add(scored);
        let rows: usize = range.clone().map(|c| chunks[c].batch.num_rows()).sum();
        let passing = range
            .map(|c| {
                masks[c]
                    .as_ref()
                    .map_or(chunks[c].batch.num_rows(), |m| m.true_count())
            })
            .sum();
        reports.push(SegmentReport {
            id: seg.id,
            state: seg.state,
            strategy,
            rows,
            passing,
            scored,
            micros: started.elapsed().as_micros(),
        });
    }
    let TopK {
        heap,
        mut null_rows,
        ..
    } = top;
    if spec.range.is_some() {
        // A NULL distance is in no range.
        null_rows.clear();
    }
    null_rows.sort_unstable();
    let mut picked: Vec<(usize, usize)> = heap
        .into_sorted_vec()
        .into_iter()
        .map(|c| (c.chunk, c.row))
        .collect();
    for r in null_rows {
        if picked.len() >= k {
            break;
        }
        picked.push(r);
    }
    if chunks.is_empty() {
        return Ok((RecordBatch::new_empty(schema), reports));
    }
    // Interleave from the chunks that hold picked rows only.
    let mut used: Vec<usize> = picked.iter().map(|(c, _)| *c).collect();
    used.sort_unstable();
    used.dedup();
    let picked: Vec<(usize, usize)> = picked
        .into_iter()
        .map(|(c, r)| (used.partition_point(|u| *u < c), r))
        .collect();
    let columns = spec
        .projection
        .iter()
        .map(|&col| {
            let arrays: Vec<&dyn Array> = used
                .iter()
                .map(|&c| chunks[c].batch.column(col).as_ref())
                .collect();
            if arrays.is_empty() {
                return Ok(arrow::array::new_empty_array(
                    chunks[0].batch.schema_ref().field(col).data_type(),
                ));
            }
            interleave(&arrays, &picked).map_err(DataFusionError::from)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let batch = if chunks.is_empty() {
        RecordBatch::new_empty(schema)
    } else {
        RecordBatch::try_new_with_options(
            schema,
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(picked.len())),
        )?
    };
    Ok((batch, reports))
}
