//! Print the JSON of protobuf bodies: `cargo run --example dump -- FILE...`.
fn main() {
    for path in std::env::args().skip(1) {
        let body = std::fs::read(&path).expect("read body");
        match skiff_protobuf::to_json(&body) {
            Ok(v) => println!("{path}: {v}"),
            Err(e) => println!("{path}: error: {e}"),
        }
    }
}
