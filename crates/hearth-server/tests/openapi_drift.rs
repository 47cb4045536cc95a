//! The committed OpenAPI document must be what the code generates: a route,
//! parameter or type changed without regenerating it fails here.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/hearth.json")
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = hearth_server::openapi_json();
    let path = committed_path();
    if std::env::var_os("HEARTH_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write openapi/hearth.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "its length".to_owned(), |i| format!("line {}", i + 1));
        panic!(
            "openapi/hearth.json differs from the API the code defines (first at {line}).\n\
             If the change is intended, regenerate it and commit the result:\n\
             \n    HEARTH_UPDATE_OPENAPI=1 cargo test -p hearth-server --test openapi_drift\n"
        );
    }
}

#[test]
fn every_route_is_documented_with_its_errors() {
    let doc: serde_json::Value = serde_json::from_str(&hearth_server::openapi_json()).unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    for route in [
        "/healthz",
        "/metrics",
        "/v1/vms",
        "/v1/vms/{id}",
        "/v1/vms/{id}/hold",
        "/v1/vms/{id}/release",
        "/v1/vms/{id}/events",
        "/v1/vms/{id}/console",
        "/v1/vms/{id}/logs/hypervisor",
    ] {
        let ops = paths[route]
            .as_object()
            .unwrap_or_else(|| panic!("{route} missing"));
        for (method, op) in ops {
            if route != "/healthz" {
                assert!(
                    op["security"].is_array(),
                    "{method} {route} has no security"
                );
                assert!(op["responses"]["401"].is_object(), "{method} {route}");
            }
        }
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "CreateVm",
        "Vm",
        "VmEvent",
        "ConsoleTail",
        "ApiError",
        "VmState",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
}
