//! Compiles the small C++ part of quiver: an HNSW search through faiss's C++
//! API (`hnsw_search.cpp`), for what faiss's C API cannot pass.
//! faiss-sys builds faiss with cmake and installs its headers; cmake reports
//! the install root, which cargo hands on as `DEP_FAISS_C_ROOT`.

use std::io::Write;

fn main() {
    // Instructions to cargo go on stdout (the build-script protocol).
    let _ = writeln!(std::io::stdout(), "cargo:rerun-if-changed=hnsw_search.cpp");
    let Ok(root) = std::env::var("DEP_FAISS_C_ROOT") else {
        panic!("faiss-sys did not report where faiss is installed (DEP_FAISS_C_ROOT)");
    };
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("hnsw_search.cpp")
        // faiss's headers as system headers: their warnings are not ours.
        .flag("-isystem")
        .flag(format!("{root}/include"))
        .warnings(true)
        .compile("quiver_hnsw");
}
