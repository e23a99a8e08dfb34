//! PostgreSQL's `json`: text checked to be JSON, in an Arrow `Utf8` field
//! marked with [`JSON_METADATA_KEY`] so that results are described as
//! `json` (drivers then decode them: psycopg gives a dict).

use std::collections::HashMap;

/// The field metadata key that marks a `Utf8` field as JSON.
pub const JSON_METADATA_KEY: &str = "quiver.json";

/// The metadata of a JSON field.
pub fn json_metadata() -> HashMap<String, String> {
    HashMap::from([(JSON_METADATA_KEY.to_string(), String::new())])
}

/// Whether a field's metadata marks it as JSON.
pub fn is_json(metadata: &HashMap<String, String>) -> bool {
    metadata.contains_key(JSON_METADATA_KEY)
}
