//! Prints the API's OpenAPI document, as docs/openapi.json holds it:
//! `cargo run -q -p baton-orchestrate --features openapi --example openapi > docs/openapi.json`.

fn main() {
    print!("{}", baton_orchestrate::openapi::document());
}
