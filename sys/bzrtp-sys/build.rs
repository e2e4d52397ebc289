//! Finds libbzrtp with pkg-config and generates bindings for its public header.

use std::env;
use std::path::PathBuf;

fn main() {
    let lib = pkg_config::Config::new()
        .atleast_version("5.0")
        .probe("libbzrtp")
        .expect("libbzrtp not found: install the Debian package libbzrtp-dev");
    // bzrtp's .pc file does not list its own dependencies.
    println!("cargo:rustc-link-lib=bctoolbox");
    println!("cargo:rustc-link-lib=sqlite3");

    let mut builder = bindgen::Builder::default()
        .header_contents("wrapper.h", "#include <bzrtp/bzrtp.h>\n")
        .allowlist_function("bzrtp_.*")
        .allowlist_type("bzrtp.*")
        .allowlist_var("ZRTP_.*|BZRTP_.*")
        .blocklist_type("bctbx_.*")
        .raw_line("pub type bctbx_mutex_t = ::core::ffi::c_void;")
        .raw_line("pub type bctbx_rng_context_t = ::core::ffi::c_void;")
        .derive_default(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for path in &lib.include_paths {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }
    let bindings = builder.generate().expect("bindgen failed on bzrtp.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("bindings.rs");
    bindings.write_to_file(out).expect("write bindings");
}
