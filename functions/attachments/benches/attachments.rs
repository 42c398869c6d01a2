//! Attachments speed, each figure beside its baseline from the same run:
//!
//! - `vault_store_retrieve/{1MB,64MB}`: the embedded vault (local key, encrypted files in a temporary directory)
//!   storing a document (data key, SHA-256, AES-256-GCM, durable write) and reading it back (decrypt, hash check);
//!   throughput is reported per document byte. `crypto_only` is the same round trip over in-memory blobs: the
//!   encryption and hashing alone; `crypto_store` and `crypto_retrieve` are its two directions. Baseline:
//!   `sha256_only` over the same bytes (every direction hashes the document once);
//! - `x12_275_parse/10MB`: tokenizing and enveloping a 275 whose BIN carries 10 MB. Baseline: `memchr_scan`, one
//!   pass over the same bytes looking for the segment terminator.
//!
//! Run: `cargo bench -j 2 -p attachments --no-default-features --bench attachments`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use exchange_core::adapters::embedded::{FolderBlobStore, LocalKeyService};
use exchange_core::ports::EncryptionContext;
use exchange_core::vault::DocumentVault;

fn document(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn interchange_275(payload: &[u8]) -> Vec<u8> {
    let mut set = Vec::new();
    let segments = [
        "BGN*02*0001*20260101",
        "NM1*PR*2*PAYER*****PI*00121",
        "NM1*41*2*SUBMITTER*****46*S1",
        "NM1*1P*2*CLINIC*****XX*1407071236",
        "NM1*QC*1*DOE*JANE****MI*M1",
        "LX*1",
        "TRN*1*ACN1",
        "STC*R3:11506-3::LOI",
        "DTP*368*D8*20260101",
        "CAT*AE*HL",
        "EFI*05",
    ];
    for s in segments {
        set.extend_from_slice(s.as_bytes());
        set.push(b'~');
    }
    set.extend_from_slice(format!("BIN*{}*", payload.len()).as_bytes());
    set.extend_from_slice(payload);
    set.push(b'~');
    let count = segments.len() + 3;
    let mut out = b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *260101*1200*^*00501*000000001*0*P*:~GS*PI*S*R*20260101*1200*1*X*005010X210~ST*275*0001*005010X210~".to_vec();
    out.extend_from_slice(&set);
    out.extend_from_slice(format!("SE*{count}*0001~GE*1*1~IEA*1*000000001~").as_bytes());
    out
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Arc::new(LocalKeyService::load_or_create(dir.path()).expect("keys"));
    let blobs = Arc::new(FolderBlobStore::open(&dir.path().join("blobs")).expect("blobs"));
    let vault = DocumentVault::new(blobs, keys.clone());
    let in_memory = DocumentVault::new(Arc::new(exchange_core::adapters::memory::MemoryBlobStore::new()), keys);
    let context = EncryptionContext::for_document("attachments/bench/1", "DEMOPAYER");

    let mut g = c.benchmark_group("vault_store_retrieve");
    g.sample_size(10);
    for (name, len) in [("1MB", 1 << 20), ("64MB", 64 << 20)] {
        let doc = document(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("sha256_only", name), &doc, |b, doc| {
            b.iter(|| exchange_core::vault::sha256(black_box(doc)))
        });
        g.bench_with_input(BenchmarkId::new("crypto_only", name), &doc, |b, doc| {
            b.iter(|| {
                rt.block_on(async {
                    let stored = in_memory.put("attachments/bench/1", &context, doc).await.expect("put");
                    let back = in_memory.get("attachments/bench/1", &context, Some(&stored.sha256)).await.expect("get");
                    assert_eq!(back.len(), doc.len());
                })
            })
        });
        // Each direction alone (in-memory blobs): what one upload or one download costs in crypto.
        let stored = rt.block_on(in_memory.put("attachments/bench/2", &context, &doc)).expect("put");
        g.bench_with_input(BenchmarkId::new("crypto_store", name), &doc, |b, doc| {
            b.iter(|| rt.block_on(in_memory.put("attachments/bench/3", &context, doc)).expect("put"))
        });
        g.bench_with_input(BenchmarkId::new("crypto_retrieve", name), &doc, |b, doc| {
            b.iter(|| {
                let back =
                    rt.block_on(in_memory.get("attachments/bench/2", &context, Some(&stored.sha256))).expect("get");
                assert_eq!(back.len(), doc.len());
            })
        });
        g.bench_with_input(BenchmarkId::new("store_and_retrieve", name), &doc, |b, doc| {
            b.iter(|| {
                rt.block_on(async {
                    let stored = vault.put("attachments/bench/1", &context, doc).await.expect("put");
                    let back = vault.get("attachments/bench/1", &context, Some(&stored.sha256)).await.expect("get");
                    assert_eq!(back.len(), doc.len());
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("x12_275_parse");
    g.sample_size(20);
    let input = interchange_275(&document(10 << 20).iter().map(|b| b'a' + b % 26).collect::<Vec<u8>>());
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("memchr_scan/10MB", |b| b.iter(|| black_box(&input).iter().filter(|&&b| b == b'~').count()));
    g.bench_function("parse/10MB", |b| {
        b.iter(|| {
            let ic = exchange_core::x12::parse_interchange(
                black_box(&input),
                &[attachments::x12::KIND_275_X210, attachments::x12::KIND_275_X211],
            )
            .expect("interchange");
            assert!(!ic.groups[0].sets[0].ack.is_rejected());
            ic.groups[0].sets[0].body.len()
        })
    });
    g.finish();
}

criterion_group!(attachment_benches, benches);
criterion_main!(attachment_benches);
