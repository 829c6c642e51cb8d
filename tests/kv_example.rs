//! Runs `examples/kv.rs` (the embedding example) as a test, so it stays true.

#[path = "../examples/kv.rs"]
mod kv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_example_replicates_sets_and_deletes_to_a_replica() {
    if let Err(e) = kv::run().await {
        panic!("kv example failed: {e}");
    }
}
