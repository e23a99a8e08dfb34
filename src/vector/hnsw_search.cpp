// What faiss's C API cannot do for quiver's indexes: an HNSW search with
// its own efSearch and a reused visited table (quiver_hnsw_search), over
// flat float storage a search loop that prefetches the rows it is about
// to score (`FlatRows`, `search_flat`),
// building HNSW with full level-0 neighbour lists (quiver_hnsw_keep_pruned),
// quantising RaBitQ queries (quiver_ivf_rabitq_query_bits),
// and backing an index's vectors and graph with huge pages
// (quiver_index_huge_pages).

#include <faiss/IndexFlat.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFRaBitQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/MetricType.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/HNSW.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/ResultHandler.h>
#include <faiss/utils/distances.h>
#include <faiss/utils/fp16.h>
#include <faiss/utils/prefetch.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define QUIVER_AVX2 1
#endif

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <queue>
#include <utility>
#include <vector>

namespace {

// Ask for transparent huge pages over the whole 2 MiB pages inside
// [data, data + bytes), and collapse the pages already there into them.
// A search reads rows scattered over the whole array: with 4 KiB pages
// nearly every row read is a TLB miss. Returns the bytes covered.
std::size_t huge_pages(const void* data, std::size_t bytes) {
    constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
    const auto start = reinterpret_cast<std::uintptr_t>(data);
    const std::uintptr_t first = (start + huge - 1) & ~(huge - 1);
    const std::uintptr_t last = (start + bytes) & ~(huge - 1);
    if (data == nullptr || last <= first) {
        return 0;
    }
    void* at = reinterpret_cast<void*>(first);
    const std::size_t len = last - first;
    if (madvise(at, len, MADV_HUGEPAGE) != 0) {
        return 0;
    }
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
    // Linux >= 6.1; older kernels leave the pages to khugepaged.
    (void)madvise(at, len, MADV_COLLAPSE);
    return len;
}

thread_local std::unique_ptr<faiss::VisitedTable> visited_table;

// ---------------------------------------------------------------------------
// Distances over a flat float array, four rows at a time: AVX2 + FMA when
// the processor has them, else faiss's own kernels. (faiss, and this file,
// are compiled for x86-64-v3 by .cargo/config.toml, so faiss's kernels are
// AVX2 too; these were measured only together with the prefetching in
// `FlatRows::score`, not against faiss's batch-of-4 kernels alone.)

#ifdef QUIVER_AVX2

__attribute__((target("avx2,fma"))) inline float sum8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    lo = _mm_add_ps(lo, _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

// Squared L2 distances (or inner products, with `Ip`) of q to four rows.
template <bool Ip>
__attribute__((target("avx2,fma"))) void avx2_four(
        const float* q,
        const float* const* rows,
        std::size_t d,
        float* out) {
    __m256 s0 = _mm256_setzero_ps();
    __m256 s1 = s0;
    __m256 s2 = s0;
    __m256 s3 = s0;
    std::size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        const __m256 x = _mm256_loadu_ps(q + i);
        __m256 a = _mm256_loadu_ps(rows[0] + i);
        __m256 b = _mm256_loadu_ps(rows[1] + i);
        __m256 c = _mm256_loadu_ps(rows[2] + i);
        __m256 e = _mm256_loadu_ps(rows[3] + i);
        if (Ip) {
            s0 = _mm256_fmadd_ps(x, a, s0);
            s1 = _mm256_fmadd_ps(x, b, s1);
            s2 = _mm256_fmadd_ps(x, c, s2);
            s3 = _mm256_fmadd_ps(x, e, s3);
        } else {
            a = _mm256_sub_ps(x, a);
            b = _mm256_sub_ps(x, b);
            c = _mm256_sub_ps(x, c);
            e = _mm256_sub_ps(x, e);
            s0 = _mm256_fmadd_ps(a, a, s0);
            s1 = _mm256_fmadd_ps(b, b, s1);
            s2 = _mm256_fmadd_ps(c, c, s2);
            s3 = _mm256_fmadd_ps(e, e, s3);
        }
    }
    float r[4] = {sum8(s0), sum8(s1), sum8(s2), sum8(s3)};
    for (; i < d; i++) {
        for (int j = 0; j < 4; j++) {
            const float y = rows[j][i];
            r[j] += Ip ? q[i] * y : (q[i] - y) * (q[i] - y);
        }
    }
    for (int j = 0; j < 4; j++) {
        out[j] = r[j];
    }
}

template <bool Ip>
__attribute__((target("avx2,fma"))) float avx2_one(
        const float* q,
        const float* row,
        std::size_t d) {
    __m256 s0 = _mm256_setzero_ps();
    __m256 s1 = s0;
    std::size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256 a = _mm256_loadu_ps(row + i);
        __m256 b = _mm256_loadu_ps(row + i + 8);
        const __m256 x = _mm256_loadu_ps(q + i);
        const __m256 y = _mm256_loadu_ps(q + i + 8);
        if (Ip) {
            s0 = _mm256_fmadd_ps(x, a, s0);
            s1 = _mm256_fmadd_ps(y, b, s1);
        } else {
            a = _mm256_sub_ps(x, a);
            b = _mm256_sub_ps(y, b);
            s0 = _mm256_fmadd_ps(a, a, s0);
            s1 = _mm256_fmadd_ps(b, b, s1);
        }
    }
    for (; i + 8 <= d; i += 8) {
        __m256 a = _mm256_loadu_ps(row + i);
        const __m256 x = _mm256_loadu_ps(q + i);
        if (Ip) {
            s0 = _mm256_fmadd_ps(x, a, s0);
        } else {
            a = _mm256_sub_ps(x, a);
            s0 = _mm256_fmadd_ps(a, a, s0);
        }
    }
    float r = sum8(_mm256_add_ps(s0, s1));
    for (; i < d; i++) {
        r += Ip ? q[i] * row[i] : (q[i] - row[i]) * (q[i] - row[i]);
    }
    return r;
}

bool has_avx2() {
    static const bool yes =
            __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes;
}
#else
bool has_avx2() {
    return false;
}
#endif

// The rows of an IndexFlat (L2 or inner product) seen from one query. A
// distance is what faiss's HNSW minimises: the squared L2 distance, or
// the negated inner product.
struct FlatRows {
    const float* data;
    std::size_t d;
    const float* query;
    bool ip;
    bool avx2;
    // Cache lines of a row to prefetch (the hardware streams the rest).
    std::size_t lines;

    FlatRows(const faiss::IndexFlat& flat, const float* query)
            : data(flat.get_xb()),
              d(static_cast<std::size_t>(flat.d)),
              query(query),
              ip(flat.metric_type == faiss::METRIC_INNER_PRODUCT),
              avx2(has_avx2()),
              lines(std::min<std::size_t>((d * sizeof(float) + 63) / 64, 64)) {}

    const float* row(faiss::idx_t i) const {
        return data + static_cast<std::size_t>(i) * d;
    }

    // Ask for a row in the L2 cache ahead of scoring it: an HNSW search
    // reads rows scattered over the whole array, and without this each
    // waits for memory in turn.
    void prefetch(faiss::idx_t i) const {
        const char* at = reinterpret_cast<const char*>(row(i));
        for (std::size_t l = 0; l < lines; l++) {
            __builtin_prefetch(at + l * 64, 0, 2);
        }
    }

    float one(faiss::idx_t i) const {
        float v;
#ifdef QUIVER_AVX2
        if (avx2) {
            v = ip ? avx2_one<true>(query, row(i), d)
                   : avx2_one<false>(query, row(i), d);
        } else
#endif
        {
            v = ip ? faiss::fvec_inner_product(query, row(i), d)
                   : faiss::fvec_L2sqr(query, row(i), d);
        }
        return ip ? -v : v;
    }

    void four(const faiss::idx_t* ids, float* out) const {
        const float* rows[4] = {row(ids[0]), row(ids[1]), row(ids[2]), row(ids[3])};
#ifdef QUIVER_AVX2
        if (avx2) {
            if (ip) {
                avx2_four<true>(query, rows, d, out);
            } else {
                avx2_four<false>(query, rows, d, out);
            }
        } else
#endif
        if (ip) {
            faiss::fvec_inner_product_batch_4(
                    query, rows[0], rows[1], rows[2], rows[3], d,
                    out[0], out[1], out[2], out[3]);
        } else {
            faiss::fvec_L2sqr_batch_4(
                    query, rows[0], rows[1], rows[2], rows[3], d,
                    out[0], out[1], out[2], out[3]);
        }
        if (ip) {
            for (int j = 0; j < 4; j++) {
                out[j] = -out[j];
            }
        }
    }

    // Score `ids` (prefetched first), calling `take(id, distance)` for each.
    template <typename Take>
    void score(const faiss::idx_t* ids, std::size_t n, Take&& take) const {
        for (std::size_t j = 0; j < n; j++) {
            prefetch(ids[j]);
        }
        std::size_t j = 0;
        for (; j + 4 <= n; j += 4) {
            float dis[4];
            four(ids + j, dis);
            for (int t = 0; t < 4; t++) {
                take(ids[j + t], dis[t]);
            }
        }
        for (; j < n; j++) {
            take(ids[j], one(ids[j]));
        }
    }
};


// The rows of an IndexScalarQuantizer (HNSW_SQ's storage) seen from one
// query, for the codes whose decoding is a few vector instructions: 8-bit
// codes (per-dimension minimum and range, faiss's QT_8bit), fp16 and
// bf16. Distances are the squared L2 distance (or negated inner product)
// to the decoded row, as faiss's own SQ distance computer gives them, at a
// quarter (8-bit) or half of the memory a float row reads.
struct SqRows {
    const std::uint8_t* codes;
    std::size_t code_size;
    std::size_t d;
    faiss::ScalarQuantizer::QuantizerType qtype;
    const float* query;
    bool ip;
    bool avx2;
    std::size_t lines;
    // 8-bit codes: row value = base[i] + code * scale[i]; the query's
    // offsets from the bases (L2), or its weights and constant (IP).
    std::vector<float> scale;
    std::vector<float> offset;
    float constant = 0;

    static bool supported(const faiss::IndexScalarQuantizer& sq) {
        const auto t = sq.sq.qtype;
        const bool codec = (t == faiss::ScalarQuantizer::QT_8bit &&
                            sq.sq.trained.size() == 2 * static_cast<std::size_t>(sq.d)) ||
                t == faiss::ScalarQuantizer::QT_fp16 ||
                t == faiss::ScalarQuantizer::QT_bf16;
        return codec &&
                (sq.metric_type == faiss::METRIC_L2 ||
                 sq.metric_type == faiss::METRIC_INNER_PRODUCT);
    }

    SqRows(const faiss::IndexScalarQuantizer& sq, const float* query)
            : codes(sq.codes.data()),
              code_size(sq.code_size),
              d(static_cast<std::size_t>(sq.d)),
              qtype(sq.sq.qtype),
              query(query),
              ip(sq.metric_type == faiss::METRIC_INNER_PRODUCT),
              avx2(has_avx2() && __builtin_cpu_supports("f16c")),
              lines(std::min<std::size_t>((sq.code_size + 63) / 64, 64)) {
        if (qtype == faiss::ScalarQuantizer::QT_8bit) {
            const float* vmin = sq.sq.trained.data();
            const float* vdiff = vmin + d;
            scale.resize(d);
            offset.resize(d);
            for (std::size_t i = 0; i < d; i++) {
                // faiss decodes code c as vmin + (c + 0.5) / 255 * vdiff.
                const float st = vdiff[i] / 255.0f;
                const float base = vmin[i] + 0.5f * st;
                if (ip) {
                    scale[i] = query[i] * st;
                    constant += query[i] * base;
                } else {
                    scale[i] = st;
                    offset[i] = query[i] - base;
                }
            }
        }
    }

    const std::uint8_t* code(faiss::idx_t i) const {
        return codes + static_cast<std::size_t>(i) * code_size;
    }

    void prefetch(faiss::idx_t i) const {
        const char* at = reinterpret_cast<const char*>(code(i));
        for (std::size_t l = 0; l < lines; l++) {
            __builtin_prefetch(at + l * 64, 0, 2);
        }
    }

    float value(const std::uint8_t* c, std::size_t i) const {
        switch (qtype) {
            case faiss::ScalarQuantizer::QT_fp16: {
                std::uint16_t h;
                std::memcpy(&h, c + 2 * i, 2);
                return faiss::decode_fp16(h);
            }
            case faiss::ScalarQuantizer::QT_bf16: {
                std::uint16_t h;
                std::memcpy(&h, c + 2 * i, 2);
                const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
                float v;
                std::memcpy(&v, &bits, 4);
                return v;
            }
            default:
                return 0;
        }
    }

    float scalar(const std::uint8_t* c, std::size_t from) const {
        float r = 0;
        for (std::size_t i = from; i < d; i++) {
            if (qtype == faiss::ScalarQuantizer::QT_8bit) {
                const float x = static_cast<float>(c[i]);
                if (ip) {
                    r += x * scale[i];
                } else {
                    const float t = offset[i] - x * scale[i];
                    r += t * t;
                }
            } else {
                const float v = value(c, i);
                r += ip ? query[i] * v : (query[i] - v) * (query[i] - v);
            }
        }
        return r;
    }

#ifdef QUIVER_AVX2
    __attribute__((target("avx2,fma,f16c"))) float simd(const std::uint8_t* c) const {
        __m256 acc = _mm256_setzero_ps();
        std::size_t i = 0;
        for (; i + 8 <= d; i += 8) {
            __m256 v;
            if (qtype == faiss::ScalarQuantizer::QT_8bit) {
                const __m128i bytes =
                        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + i));
                const __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
                const __m256 sc = _mm256_loadu_ps(scale.data() + i);
                if (ip) {
                    acc = _mm256_fmadd_ps(x, sc, acc);
                } else {
                    const __m256 t =
                            _mm256_fnmadd_ps(x, sc, _mm256_loadu_ps(offset.data() + i));
                    acc = _mm256_fmadd_ps(t, t, acc);
                }
                continue;
            }
            const __m128i halves =
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 2 * i));
            if (qtype == faiss::ScalarQuantizer::QT_fp16) {
                v = _mm256_cvtph_ps(halves);
            } else {
                v = _mm256_castsi256_ps(
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
            }
            const __m256 q = _mm256_loadu_ps(query + i);
            if (ip) {
                acc = _mm256_fmadd_ps(q, v, acc);
            } else {
                const __m256 t = _mm256_sub_ps(q, v);
                acc = _mm256_fmadd_ps(t, t, acc);
            }
        }
        return sum8(acc) + scalar(c, i);
    }
#endif

    float one(faiss::idx_t id) const {
        const std::uint8_t* c = code(id);
        float r;
#ifdef QUIVER_AVX2
        if (avx2) {
            r = simd(c);
        } else
#endif
        {
            r = scalar(c, 0);
        }
        if (ip) {
            return qtype == faiss::ScalarQuantizer::QT_8bit ? -(r + constant) : -r;
        }
        return r;
    }

    template <typename Take>
    void score(const faiss::idx_t* ids, std::size_t n, Take&& take) const {
        for (std::size_t j = 0; j < n; j++) {
            prefetch(ids[j]);
        }
        for (std::size_t j = 0; j < n; j++) {
            take(ids[j], one(ids[j]));
        }
    }
};

thread_local std::vector<faiss::idx_t> fresh_ids;
thread_local std::vector<faiss::idx_t> far_ids;

// A walk that has scored this many times level 0's degree and found far
// fewer passing rows than the passing fraction promises starts again from
// passing rows of an upper level.
constexpr std::size_t SEED_AFTER = 16;

// Below this share of passing rows a filtered walk starts from the passing
// rows of an upper level (see search_flat_filtered).
constexpr double SEED_NOW_BELOW = 0.25;

// The greedy descent through the upper levels, from the entry point to
// the nearest row of level 1 (`nearest`, at distance `d_nearest`).
template <typename Rows>
void descend(
        const faiss::HNSW& hnsw,
        const Rows& rows,
        std::vector<faiss::idx_t>& fresh,
        faiss::HNSW::storage_idx_t& nearest,
        float& d_nearest) {
    d_nearest = rows.one(nearest);
    for (int level = hnsw.max_level; level >= 1; level--) {
        for (;;) {
            const faiss::HNSW::storage_idx_t before = nearest;
            std::size_t begin = 0;
            std::size_t end = 0;
            hnsw.neighbor_range(nearest, level, &begin, &end);
            fresh.clear();
            for (std::size_t j = begin; j < end && hnsw.neighbors[j] >= 0; j++) {
                fresh.push_back(hnsw.neighbors[j]);
            }
            rows.score(fresh.data(), fresh.size(), [&](faiss::idx_t id, float dis) {
                if (dis < d_nearest) {
                    nearest = static_cast<faiss::HNSW::storage_idx_t>(id);
                    d_nearest = dis;
                }
            });
            if (nearest == before) {
                break;
            }
        }
    }
}

// faiss's HNSW::search (bounded queue, relative distance check) over flat
// storage, visiting the same nodes in the same order: the greedy descent
// through the upper levels, then the beam search of level 0 with `ef`
// candidates. What differs is memory access: the unvisited neighbours of
// a node are found first and their rows prefetched together, so their
// reads overlap instead of each waiting for the one before.
template <typename Rows>
void search_flat(
        const faiss::HNSW& hnsw,
        const Rows& rows,
        int ef,
        const faiss::IDSelector* sel,
        faiss::ResultHandler<faiss::HNSW::C>& res,
        faiss::VisitedTable& vt) {
    if (hnsw.entry_point < 0) {
        return;
    }
    std::vector<faiss::idx_t>& fresh = fresh_ids;
    faiss::HNSW::storage_idx_t nearest = hnsw.entry_point;
    float d_nearest = 0;
    descend(hnsw, rows, fresh, nearest, d_nearest);

    faiss::HNSW::MinimaxHeap candidates(ef);
    candidates.push(nearest, d_nearest);
    auto threshold = res.threshold;
    if (!sel || sel->is_member(nearest)) {
        if (d_nearest < threshold && res.add_result(d_nearest, nearest)) {
            threshold = res.threshold;
        }
    }
    vt.set(nearest);
    while (candidates.size() > 0) {
        float d0 = 0;
        const int v0 = candidates.pop_min(&d0);
        // More than ef candidates already scored lie nearer than this one.
        if (candidates.count_below(d0) >= ef) {
            break;
        }
        std::size_t begin = 0;
        std::size_t end = 0;
        hnsw.neighbor_range(v0, 0, &begin, &end);
        std::size_t last = begin;
        for (; last < end && hnsw.neighbors[last] >= 0; last++) {
            prefetch_L2(vt.visited.data() + hnsw.neighbors[last]);
        }
        fresh.clear();
        for (std::size_t j = begin; j < last; j++) {
            const int v1 = hnsw.neighbors[j];
            if (!vt.get(v1)) {
                vt.set(v1);
                fresh.push_back(v1);
            }
        }
        threshold = res.threshold;
        rows.score(fresh.data(), fresh.size(), [&](faiss::idx_t id, float dis) {
            if (!sel || sel->is_member(id)) {
                if (dis < threshold && res.add_result(dis, id)) {
                    threshold = res.threshold;
                }
            }
            candidates.push(static_cast<faiss::HNSW::storage_idx_t>(id), dis);
        });
    }
}

// A filtered beam search over flat storage: the nearest rows among those
// `bitmap` marks (one bit per row, least significant first). faiss's walk
// with an ID selector keeps `ef` candidates of any kind and stops when
// they are nearer than the next one, so when few rows pass it stops with
// few results (its recall falls to about the passing fraction). Here only
// passing rows count towards `ef` (as hnswlib's filtered search):
//
// - while fewer than `ef` passing rows are found, every neighbour is
//   scored and followed, passing or not, so the walk crosses regions where
//   nothing passes;
// - after that, rows that fail are not scored: with `two_hop`, the passing
//   neighbours of such a row are taken instead (ACORN-1's expansion), so
//   the walk goes on over the passing rows' own neighbourhoods even where
//   they are not linked to each other directly.
//
// Stops, returning false, once it has scored more than `budget` rows: an
// exact scan of the passing rows is then cheaper.
template <typename Rows>
bool search_flat_filtered(
        const faiss::HNSW& hnsw,
        const Rows& rows,
        int ef,
        const std::uint8_t* bitmap,
        bool two_hop,
        std::int64_t budget,
        const std::int64_t* seeds,
        std::size_t nseeds,
        double fraction,
        std::int64_t& scored,
        faiss::ResultHandler<faiss::HNSW::C>& res,
        faiss::VisitedTable& vt) {
    if (hnsw.entry_point < 0) {
        return true;
    }
    const auto passes = [bitmap](faiss::idx_t id) {
        return ((bitmap[id >> 3] >> (id & 7)) & 1) != 0;
    };
    std::vector<faiss::idx_t>& fresh = fresh_ids;
    std::vector<faiss::idx_t>& far = far_ids;
    faiss::HNSW::storage_idx_t nearest = hnsw.entry_point;
    float d_nearest = 0;
    descend(hnsw, rows, fresh, nearest, d_nearest);
    using Entry = std::pair<float, faiss::idx_t>;
    // Rows to expand, nearest first; passing rows found, farthest first.
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> candidates;
    std::priority_queue<Entry> found;
    const auto full = [&]() { return found.size() >= static_cast<std::size_t>(ef); };
    const auto offer = [&](faiss::idx_t id, float dis) {
        if (full() && dis >= found.top().first) {
            return;
        }
        candidates.emplace(dis, id);
        if (passes(id)) {
            found.emplace(dis, id);
            if (found.size() > static_cast<std::size_t>(ef)) {
                found.pop();
            }
        }
    };
    offer(nearest, d_nearest);
    vt.set(nearest);
    scored = 1;
    // At most this many rows scored per expanded row (level 0's degree).
    const std::size_t degree = static_cast<std::size_t>(hnsw.nb_neighbors(0));
    // Where the filter keeps rows far from the query (a category unlike
    // it), the walk finds far fewer passing rows than the passing fraction
    // promises: it then goes on from the passing rows of an upper level
    // too, instead of crossing everything nearer first.
    bool seeded = nseeds == 0;
    // Below a quarter passing, the walk starts from the passing rows of an
    // upper level at once: a filter that follows the vectors (a category)
    // otherwise costs a long crossing of failing rows first. On
    // fashion-mnist with `label = 3` (10 %) that took 0.69 of an unfiltered
    // search's rate at recall 0.956 (0.33 before); uncorrelated filters
    // of 10 % kept theirs (0.8 to 1.0).
    const bool seed_now = fraction < SEED_NOW_BELOW;
    const auto seed = [&]() {
        seeded = true;
        fresh.clear();
        for (std::size_t j = 0; j < nseeds; j++) {
            if (!vt.get(seeds[j])) {
                vt.set(seeds[j]);
                fresh.push_back(seeds[j]);
            }
        }
        scored += static_cast<std::int64_t>(fresh.size());
        rows.score(fresh.data(), fresh.size(), offer);
    };
    if (seed_now && !seeded) {
        seed();
    }
    while (!candidates.empty()) {
        const Entry next = candidates.top();
        if (full() && next.first > found.top().first) {
            break;
        }
        candidates.pop();
        std::size_t begin = 0;
        std::size_t end = 0;
        hnsw.neighbor_range(next.second, 0, &begin, &end);
        std::size_t last = begin;
        for (; last < end && hnsw.neighbors[last] >= 0; last++) {
            prefetch_L2(vt.visited.data() + hnsw.neighbors[last]);
        }
        fresh.clear();
        // Once started from upper-level rows that pass, the walk no longer
        // crosses what fails (what fails nearer the query would come first).
        const bool crossing = (two_hop ? found.empty() : !full()) && !(seeded && nseeds > 0);
        far.clear();
        for (std::size_t j = begin; j < last; j++) {
            const int v1 = hnsw.neighbors[j];
            if (vt.get(v1)) {
                continue;
            }
            vt.set(v1);
            if (passes(v1) || crossing) {
                fresh.push_back(v1);
            } else if (two_hop) {
                far.push_back(v1);
            }
        }
        // The neighbour lists of failing neighbours, read together (each
        // is a miss in the cache; issued at once, they overlap).
        for (const faiss::idx_t v1 : far) {
            const auto* list = hnsw.neighbors.data() + hnsw.offsets[v1];
            __builtin_prefetch(list, 0, 1);
            __builtin_prefetch(reinterpret_cast<const char*>(list) + 64, 0, 1);
        }
        for (std::size_t f = 0; f < far.size() && fresh.size() < degree; f++) {
            const std::size_t b2 = hnsw.offsets[far[f]];
            for (std::size_t t = b2;
                 t < b2 + degree && hnsw.neighbors[t] >= 0 && fresh.size() < degree;
                 t++) {
                const int v2 = hnsw.neighbors[t];
                if (passes(v2) && !vt.get(v2)) {
                    vt.set(v2);
                    fresh.push_back(v2);
                }
            }
        }
        scored += static_cast<std::int64_t>(fresh.size());
        rows.score(fresh.data(), fresh.size(), offer);
        if (scored > budget) {
            return false;
        }
        if (!seeded && !full() && scored >= static_cast<std::int64_t>(SEED_AFTER * degree) &&
            static_cast<double>(found.size()) * 4 < static_cast<double>(scored) * fraction) {
            seed();
        }
    }
    // The nearest k of those found.
    std::vector<Entry> out;
    out.reserve(found.size());
    while (!found.empty()) {
        out.push_back(found.top());
        found.pop();
    }
    auto threshold = res.threshold;
    for (auto it = out.rbegin(); it != out.rend(); ++it) {
        if (it->first < threshold && res.add_result(it->first, it->second)) {
            threshold = res.threshold;
        }
    }
    return true;
}

// Before a search of `hnsw` for `k` rows: no labels yet, and this
// thread's visited table sized for the index. False when the index is
// empty (nothing to search).
bool start_search(const faiss::IndexHNSW& hnsw, std::int64_t k, std::int64_t* labels) {
    for (std::int64_t i = 0; i < k; i++) {
        labels[i] = -1;
    }
    if (hnsw.ntotal == 0) {
        return false;
    }
    const auto rows = static_cast<std::size_t>(hnsw.ntotal);
    if (!visited_table || visited_table->visited.size() < rows) {
        visited_table = std::make_unique<faiss::VisitedTable>(static_cast<int>(rows));
    }
    return true;
}

void write_message(const char* what, char* out, std::size_t len) {
    if (out == nullptr || len == 0) {
        return;
    }
    std::strncpy(out, what, len - 1);
    out[len - 1] = '\0';
}

// Run `f`, turning an exception into -1 with its message in `message`
// (`what` when it has none).
template <typename F>
int guarded(const char* what, char* message, std::size_t message_len, F&& f) {
    try {
        return f();
    } catch (const std::exception& e) {
        write_message(e.what(), message, message_len);
        return -1;
    } catch (...) {
        write_message(what, message, message_len);
        return -1;
    }
}

// faiss's HNSW keeps the smallest: similarities go in negated and come
// back out negated again.
void negate(float* distances, std::int64_t k) {
    for (std::int64_t i = 0; i < k; i++) {
        distances[i] = -distances[i];
    }
}

} // namespace

// One query against a faiss HNSW index, with what faiss's C API cannot
// pass: the efSearch of this query (so concurrent searches with different
// settings need not change the index) and a visited-node table kept per
// thread. faiss's IndexHNSW::search allocates and clears a table of one
// byte per indexed row on every call: 1 MB for a segment of 1M rows, a
// noticeable share of a search at ef 64. Kept here, it is cleared once every
// 250 searches (faiss's VisitedTable::advance).
//
// Returns 0 on success, 1 when `index` is not an HNSW index with storage
// (the caller searches through faiss's C API instead), -1 on an error,
// with its message in `message`.
extern "C" int quiver_hnsw_search(
        const void* index,
        const float* query,
        std::int64_t k,
        std::int32_t ef,
        const void* selector,
        float* distances,
        std::int64_t* labels,
        char* message,
        std::size_t message_len) {
    return guarded("unknown error in HNSW search", message, message_len, [&]() -> int {
        const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(
                static_cast<const faiss::Index*>(index));
        if (hnsw == nullptr || hnsw->storage == nullptr || k <= 0) {
            return 1;
        }
        if (!start_search(*hnsw, k, labels)) {
            return 0;
        }
        // faiss's HNSW keeps the smallest distances: a similarity is
        // negated on the way in and back on the way out.
        const bool similarity =
                faiss::is_similarity_metric(hnsw->storage->metric_type);
        const auto* sel = static_cast<const faiss::IDSelector*>(selector);
        const auto* flat = dynamic_cast<const faiss::IndexFlat*>(hnsw->storage);
        const bool own_loop = flat != nullptr &&
                (flat->metric_type == faiss::METRIC_L2 ||
                 flat->metric_type == faiss::METRIC_INNER_PRODUCT) &&
                hnsw->hnsw.search_bounded_queue;
        const auto* sq = dynamic_cast<const faiss::IndexScalarQuantizer*>(hnsw->storage);
        const bool sq_loop = sq != nullptr && SqRows::supported(*sq) &&
                hnsw->hnsw.search_bounded_queue;

        using Block = faiss::HeapBlockResultHandler<faiss::HNSW::C>;
        Block block(1, distances, labels, static_cast<std::size_t>(k));
        Block::SingleResultHandler result(block);

        result.begin(0);
        try {
            const auto walk = [&](const auto& rows) {
                search_flat(
                        hnsw->hnsw,
                        rows,
                        std::max<int>(ef, static_cast<int>(k)),
                        sel,
                        result,
                        *visited_table);
                visited_table->advance();
            };
            if (own_loop) {
                walk(FlatRows(*flat, query));
            } else if (sq_loop) {
                walk(SqRows(*sq, query));
            } else {
                std::unique_ptr<faiss::DistanceComputer> dis(
                        hnsw->storage->get_distance_computer());
                if (similarity) {
                    dis.reset(new faiss::NegativeDistanceComputer(dis.release()));
                }
                dis->set_query(query);
                faiss::SearchParametersHNSW params;
                params.efSearch = ef;
                params.sel = const_cast<faiss::IDSelector*>(sel);
                hnsw->hnsw.search(*dis, result, *visited_table, &params);
            }
        } catch (...) {
            // The table may hold this search's marks: start a new one.
            visited_table.reset();
            throw;
        }
        result.end();
        if (similarity) {
            negate(distances, k);
        }
        return 0;
    });
}

// One filtered query against an HNSW index over flat storage (or 8-bit,
// fp16 or bf16 codes, see SqRows): the `k` nearest rows among those
// `bitmap` marks (see search_flat_filtered). Returns 0 on success, 1 when
// `index` is not an HNSW index over such L2 or inner-product storage, 2 when the walk scored more than `budget`
// rows (the caller scans the passing rows instead), -1 on an error.
extern "C" int quiver_hnsw_search_filtered(
        const void* index,
        const float* query,
        std::int64_t k,
        std::int32_t ef,
        const std::uint8_t* bitmap,
        std::int32_t two_hop,
        std::int64_t budget,
        const std::int64_t* seeds,
        std::int64_t nseeds,
        double fraction,
        std::int64_t* scored,
        float* distances,
        std::int64_t* labels,
        char* message,
        std::size_t message_len) {
    return guarded("unknown error in filtered HNSW search", message, message_len, [&]() -> int {
        const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(
                static_cast<const faiss::Index*>(index));
        if (hnsw == nullptr || hnsw->storage == nullptr || k <= 0 || bitmap == nullptr) {
            return 1;
        }
        const auto* flat = dynamic_cast<const faiss::IndexFlat*>(hnsw->storage);
        const auto* sq = dynamic_cast<const faiss::IndexScalarQuantizer*>(hnsw->storage);
        const bool flat_ok = flat != nullptr &&
                (flat->metric_type == faiss::METRIC_L2 ||
                 flat->metric_type == faiss::METRIC_INNER_PRODUCT);
        const bool sq_ok = sq != nullptr && SqRows::supported(*sq);
        if (!flat_ok && !sq_ok) {
            return 1;
        }
        if (!start_search(*hnsw, k, labels)) {
            return 0;
        }
        using Block = faiss::HeapBlockResultHandler<faiss::HNSW::C>;
        Block block(1, distances, labels, static_cast<std::size_t>(k));
        Block::SingleResultHandler result(block);
        result.begin(0);
        bool settled = true;
        try {
            const auto walk = [&](const auto& rows) {
                return search_flat_filtered(
                        hnsw->hnsw,
                        rows,
                        std::max<int>(ef, static_cast<int>(k)),
                        bitmap,
                        two_hop != 0,
                        budget,
                        seeds,
                        static_cast<std::size_t>(std::max<std::int64_t>(nseeds, 0)),
                        fraction,
                        *scored,
                        result,
                        *visited_table);
            };
            if (flat_ok) {
                settled = walk(FlatRows(*flat, query));
            } else {
                settled = walk(SqRows(*sq, query));
            }
            visited_table->advance();
        } catch (...) {
            visited_table.reset();
            throw;
        }
        result.end();
        if (!settled) {
            return 2;
        }
        if (hnsw->storage->metric_type == faiss::METRIC_INNER_PRODUCT) {
            negate(distances, k);
        }
        return 0;
    });
}

// The rows of the lowest level above 0 of an HNSW index that holds at
// most `max_rows` rows (levels above hold fewer), written to `out` (room
// for `max_rows`). Returns how many, or -1 when `index` is not HNSW.
extern "C" std::int64_t quiver_hnsw_upper_rows(
        const void* index,
        std::int64_t max_rows,
        std::int64_t* out) {
    const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(
            static_cast<const faiss::Index*>(index));
    if (hnsw == nullptr) {
        return -1;
    }
    const auto& levels = hnsw->hnsw.levels;
    // levels[i] is one more than the top level of row i.
    std::vector<std::int64_t> at_least(static_cast<std::size_t>(hnsw->hnsw.max_level) + 2, 0);
    for (const int l : levels) {
        for (int level = 1; level < l && level < static_cast<int>(at_least.size()); level++) {
            at_least[static_cast<std::size_t>(level)]++;
        }
    }
    int chosen = -1;
    for (std::size_t level = 1; level < at_least.size(); level++) {
        if (at_least[level] > 0 && at_least[level] <= max_rows) {
            chosen = static_cast<int>(level);
            break;
        }
    }
    if (chosen < 0) {
        return 0;
    }
    std::int64_t n = 0;
    for (std::size_t i = 0; i < levels.size() && n < max_rows; i++) {
        if (levels[i] - 1 >= chosen) {
            out[n++] = static_cast<std::int64_t>(i);
        }
    }
    return n;
}

// Whether rows added to `index` from now on fill their level-0 neighbour
// lists up to the maximum with the candidates the diversity heuristic
// pruned (faiss's keep_max_size_level0; pgvector always does so). Returns
// 0, or 1 when `index` is not an HNSW index.
extern "C" int quiver_hnsw_keep_pruned(void* index, int keep) {
    auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(static_cast<faiss::Index*>(index));
    if (hnsw == nullptr) {
        return 1;
    }
    hnsw->keep_max_size_level0 = keep != 0;
    return 0;
}

// The mean number of level-0 neighbours per node of an HNSW index, or -1
// when `index` is not one (for tests of quiver_hnsw_keep_pruned).
extern "C" double quiver_hnsw_level0_degree(const void* index) {
    const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(
            static_cast<const faiss::Index*>(index));
    if (hnsw == nullptr) {
        return -1;
    }
    if (hnsw->ntotal == 0) {
        return 0;
    }
    std::size_t links = 0;
    for (faiss::idx_t i = 0; i < hnsw->ntotal; i++) {
        std::size_t begin = 0;
        std::size_t end = 0;
        hnsw->hnsw.neighbor_range(i, 0, &begin, &end);
        for (std::size_t j = begin; j < end && hnsw->hnsw.neighbors[j] >= 0; j++) {
            links++;
        }
    }
    return static_cast<double>(links) / static_cast<double>(hnsw->ntotal);
}

// Back the vectors of a flat-storage index (flat, or HNSW's storage) and
// an HNSW graph's neighbour table with huge pages where the kernel allows
// it (transparent_hugepage `madvise` or `always`). Returns the bytes
// advised; 0 when nothing was (other index types, or THP off).
extern "C" std::size_t quiver_index_huge_pages(const void* index) {
    const auto* base = static_cast<const faiss::Index*>(index);
    std::size_t covered = 0;
    const faiss::Index* storage = base;
    if (const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(base)) {
        const auto& neighbors = hnsw->hnsw.neighbors;
        covered += huge_pages(
                neighbors.data(), neighbors.size() * sizeof(neighbors[0]));
        storage = hnsw->storage;
    }
    if (const auto* flat = dynamic_cast<const faiss::IndexFlatCodes*>(storage)) {
        covered += huge_pages(flat->codes.data(), flat->codes.size());
    }
    return covered;
}

// The bits an IVF-RaBitQ index quantises each query to (its `qb`, kept in
// the index file). With 0 faiss 1.12 scores every code with a float loop
// over its bits, about 2 us a code for 128 dimensions; with 1 to 8 it
// counts bits (popcount), about 30 times faster. Returns 1 when `index` is
// not an IVF-RaBitQ index.
extern "C" int quiver_ivf_rabitq_query_bits(void* index, int bits) {
    auto* ivf = dynamic_cast<faiss::IndexIVFRaBitQ*>(static_cast<faiss::Index*>(index));
    if (ivf == nullptr || bits < 0 || bits > 8) {
        return 1;
    }
    ivf->qb = static_cast<std::uint8_t>(bits);
    return 0;
}
