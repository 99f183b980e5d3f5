//! JSON <-> CBOR for the terminal: `agora pub` takes JSON, `agora sub` shows payloads as JSON.

use ciborium::value::Value as Cbor;
use serde_json::Value as Json;

/// Parse the JSON of an event. An integer literal beyond 64 bits is an error: the JSON parser
/// would make it a float (2^64 became 1.8446744073709552e19), quietly changing the value.
pub fn parse_event_json(text: &str) -> anyhow::Result<Json> {
    let value: Json = serde_json::from_str(text).map_err(|e| {
        // The error says where; a short input is quoted as well.
        let quoted = if text.len() <= 120 {
            format!(": {text}")
        } else {
            String::new()
        };
        anyhow::anyhow!("the event is not valid JSON ({e}){quoted}")
    })?;
    // Valid JSON from here on: outside strings, a number is a run of `-+.0-9eE`.
    let mut in_string = false;
    let mut escaped = false;
    let mut number = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c.is_ascii_digit() || "-+.eE".contains(c) {
            number.push(c);
        } else {
            let integer = !number.is_empty() && !number.contains(['.', 'e', 'E']);
            if integer && number.parse::<i64>().is_err() && number.parse::<u64>().is_err() {
                anyhow::bail!(
                    "the integer {number} does not fit in 64 bits (-2^63 to 2^64-1); write it \
                     as a string, or as a float if a float will do"
                );
            }
            number.clear();
            in_string = c == '"';
        }
    }
    Ok(value)
}

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
    fn integers_beyond_64_bits_are_refused_not_rounded() {
        for ok in [
            "18446744073709551615",
            "-9223372036854775808",
            r#"{"n": 1e30, "m": 1.5, "s": "123456789012345678901234567890"}"#,
            r#"["\"99999999999999999999\"", 3]"#,
        ] {
            assert!(parse_event_json(ok).is_ok(), "{ok}");
        }
        for bad in [
            "18446744073709551616",
            "-9223372036854775809",
            r#"{"a": [1, 99999999999999999999999]}"#,
        ] {
            let e = parse_event_json(bad).unwrap_err().to_string();
            assert!(e.contains("does not fit in 64 bits"), "{bad}: {e}");
        }
        assert!(parse_event_json("{nope")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
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
