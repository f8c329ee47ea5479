//! The container helper as a program of its own, for this crate's tests. Skiff itself runs
//! the same code as `skiff container-helper`.

fn main() {
    std::process::exit(skiff_shim_container::helper::main_from_args(
        std::env::args().skip(1),
    ));
}
