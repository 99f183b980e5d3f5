//! JSON <-> CBOR for the terminal: `agora pub` takes JSON, `agora sub` shows payloads as JSON.

use ciborium::value::Value as Cbor;
use serde_json::Value as Json;

/// Encode a JSON value as CBOR (numbers keep their JSON type: `1` is an integer, `1.0` a float).
pub fn json_to_cbor(json: &Json) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(json, &mut out)?;
    Ok(out)
}

/// Decode a CBOR payload for display. Bytes become `{"$bytes": "<hex>"}`, map keys that are
/// not text are written as their JSON text, non-finite floats as strings.
pub fn cbor_to_json(bytes: &[u8]) -> Result<Json, String> {
    let v: Cbor = ciborium::from_reader(bytes).map_err(|e| e.to_string())?;
    Ok(convert(&v))
}

fn convert(v: &Cbor) -> Json {
    match v {
        Cbor::Integer(i) => {
            let i: i128 = (*i).into();
            if let Ok(n) = i64::try_from(i) {
                Json::from(n)
            } else if let Ok(n) = u64::try_from(i) {
                Json::from(n)
            } else {
                Json::String(i.to_string())
            }
        }
        Cbor::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(f.to_string())),
        Cbor::Text(s) => Json::String(s.clone()),
        Cbor::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "$bytes": hex })
        }
        Cbor::Bool(b) => Json::Bool(*b),
        Cbor::Null => Json::Null,
        Cbor::Tag(tag, inner) => serde_json::json!({ "$tag": tag, "value": convert(inner) }),
        Cbor::Array(items) => Json::Array(items.iter().map(convert).collect()),
        Cbor::Map(entries) => {
            let mut m = serde_json::Map::new();
            for (k, v) in entries {
                let key = match k {
                    Cbor::Text(s) => s.clone(),
                    other => convert(other).to_string(),
                };
                m.insert(key, convert(v));
            }
            Json::Object(m)
        }
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_types() {
        let j: Json = serde_json::from_str(
            r#"{"a":1,"b":1.5,"c":"x","d":[true,null],"e":{"f":-3},"g":18446744073709551615}"#,
        )
        .unwrap();
        let cbor = json_to_cbor(&j).unwrap();
        assert_eq!(cbor_to_json(&cbor).unwrap(), j);
    }

    #[test]
    fn bytes_and_garbage() {
        let mut b = Vec::new();
        ciborium::into_writer(&Cbor::Bytes(vec![0, 255]), &mut b).unwrap();
        assert_eq!(
            cbor_to_json(&b).unwrap(),
            serde_json::json!({"$bytes": "00ff"})
        );
        assert!(cbor_to_json(&[0xff, 0xff]).is_err());
    }
}
