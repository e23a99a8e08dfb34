// What faiss's C API cannot do for quiver's indexes: an HNSW search with
// its own efSearch and a reused visited table (quiver_hnsw_search),
// building HNSW with full level-0 neighbour lists (quiver_hnsw_keep_pruned),
// and backing an index's vectors and graph with huge pages
// (quiver_index_huge_pages).

#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/MetricType.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/HNSW.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/ResultHandler.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>

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

void write_message(const char* what, char* out, std::size_t len) {
    if (out == nullptr || len == 0) {
        return;
    }
    std::strncpy(out, what, len - 1);
    out[len - 1] = '\0';
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
    try {
        const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(
                static_cast<const faiss::Index*>(index));
        if (hnsw == nullptr || hnsw->storage == nullptr || k <= 0) {
            return 1;
        }
        for (std::int64_t i = 0; i < k; i++) {
            labels[i] = -1;
        }
        if (hnsw->ntotal == 0) {
            return 0;
        }
        const auto rows = static_cast<std::size_t>(hnsw->ntotal);
        if (!visited_table || visited_table->visited.size() < rows) {
            visited_table = std::make_unique<faiss::VisitedTable>(
                    static_cast<int>(rows));
        }
        // faiss's HNSW keeps the smallest distances: a similarity is
        // negated on the way in and back on the way out.
        const bool similarity =
                faiss::is_similarity_metric(hnsw->storage->metric_type);
        std::unique_ptr<faiss::DistanceComputer> dis(
                hnsw->storage->get_distance_computer());
        if (similarity) {
            dis.reset(new faiss::NegativeDistanceComputer(dis.release()));
        }
        dis->set_query(query);

        using Block = faiss::HeapBlockResultHandler<faiss::HNSW::C>;
        Block block(1, distances, labels, static_cast<std::size_t>(k));
        Block::SingleResultHandler result(block);
        faiss::SearchParametersHNSW params;
        params.efSearch = ef;
        params.sel = const_cast<faiss::IDSelector*>(
                static_cast<const faiss::IDSelector*>(selector));

        result.begin(0);
        try {
            hnsw->hnsw.search(*dis, result, *visited_table, &params);
        } catch (...) {
            // The table may hold this search's marks: start a new one.
            visited_table.reset();
            throw;
        }
        result.end();
        if (similarity) {
            for (std::int64_t i = 0; i < k; i++) {
                distances[i] = -distances[i];
            }
        }
        return 0;
    } catch (const std::exception& e) {
        write_message(e.what(), message, message_len);
        return -1;
    } catch (...) {
        write_message("unknown error in HNSW search", message, message_len);
        return -1;
    }
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
