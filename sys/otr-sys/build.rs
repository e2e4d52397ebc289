//! Finds libotr with pkg-config and generates bindings for its public headers.

use std::env;
use std::path::PathBuf;

fn main() {
    let lib = pkg_config::Config::new()
        .atleast_version("4.1")
        .probe("libotr")
        .expect("libotr not found: install the Debian package libotr5-dev");
    // libotr's .pc file names only -lotr, but its API hands out gcrypt types.
    println!("cargo:rustc-link-lib=gcrypt");

    let header = "#include <stdio.h>\n#include <libotr/proto.h>\n#include <libotr/message.h>\n\
                  #include <libotr/privkey.h>\n#include <libotr/userstate.h>\n#include <libotr/instag.h>\n\
                  #include <libotr/sm.h>\n#include <libotr/version.h>\n";
    let mut builder = bindgen::Builder::default()
        .header_contents("wrapper.h", header)
        .allowlist_function("otrl_.*")
        .allowlist_type("Otrl.*|OtrlMessageAppOps|ConnContext|Fingerprint")
        .allowlist_var("OTRL_.*")
        .derive_default(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for path in &lib.include_paths {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }
    let bindings = builder
        .generate()
        .expect("bindgen failed on libotr headers");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("bindings.rs");
    bindings.write_to_file(out).expect("write bindings");
}
