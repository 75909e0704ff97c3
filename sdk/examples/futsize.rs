//! Prints the size of the producer's send future (a performance diagnostic).
#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("futsize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("d.yaml");
    std::fs::write(
        &path,
        "clusters:\n  - name: east\n    bootstrap: [\"127.0.0.1:1\"]\ntopics:\n  - name: t\n    cluster: east\n    partitions: 1\n",
    )
    .unwrap();
    let sy = switchyard::Switchyard::from_file(&path, "futsize").unwrap();
    let p = sy.producer();
    let f = p.send(switchyard::Record::new("t").payload("x"));
    println!("send future: {} bytes", std::mem::size_of_val(&f));
    drop(f);
    let _ = std::fs::remove_dir_all(dir);
}
