//! Parsing a vector's text form (`[0.1,-2.5,...]`), as a text parameter
//! or a COPY field arrives, at 128 and 784 dimensions (fashion-mnist's),
//! and printing it.
//! Run with `cargo bench -p quiver-vector --bench text_parse`.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use quiver_vector::text::{format_vector, parse_vector, parse_vector_into};

/// Deterministic floats with the spread of embedding values.
fn values(dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

/// Nine significant digits in exponent form (enough to round-trip a
/// float32, as clients that print `%.9g` send them).
fn printed(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.8e}")).collect();
    format!("[{}]", parts.join(","))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("vector text");
    for dim in [128usize, 784] {
        let v = values(dim, dim as u64);
        // Two spellings: quiver's own output (shortest round trip) and
        // 9 significant digits in exponent form.
        for (name, text) in [("shortest", format_vector(&v)), ("9 digits", printed(&v))] {
            assert_eq!(parse_vector(&text).unwrap().len(), dim);
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_function(format!("parse {dim}-d, {name}"), |b| {
                let mut out = Vec::with_capacity(dim);
                b.iter(|| {
                    out.clear();
                    parse_vector_into(black_box(&text), &mut out).unwrap();
                    black_box(out.len())
                })
            });
        }
        group.throughput(Throughput::Elements(dim as u64));
        group.bench_function(format!("format {dim}-d"), |b| {
            b.iter(|| black_box(format_vector(black_box(&v))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
