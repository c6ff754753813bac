//! The JWT messages of the SPIFFE Workload API (`workload.proto`, package `""`,
//! service `SpiffeWorkloadAPI`), as protobuf structs. The X.509 calls are not served:
//! leash issues no X.509-SVIDs.

use std::collections::HashMap;

/// `JWTSVIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvidRequest {
    /// The audiences the token is for.
    #[prost(string, repeated, tag = "1")]
    pub audience: Vec<String>,
    /// A SPIFFE ID the caller asks for; empty for its own.
    #[prost(string, tag = "2")]
    pub spiffe_id: String,
}

/// `JWTSVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvidResponse {
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<JwtSvid>,
}

/// `JWTSVID`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvid {
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The token, JWS compact serialization.
    #[prost(string, tag = "2")]
    pub svid: String,
    #[prost(string, tag = "3")]
    pub hint: String,
}

/// `JWTBundlesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesRequest {}

/// `JWTBundlesResponse`: JWKS documents by trust domain ID (`spiffe://td`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesResponse {
    #[prost(map = "string, bytes", tag = "1")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// `ValidateJWTSVIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateJwtSvidRequest {
    #[prost(string, tag = "1")]
    pub audience: String,
    #[prost(string, tag = "2")]
    pub svid: String,
}

/// `ValidateJWTSVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateJwtSvidResponse {
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    #[prost(message, optional, tag = "2")]
    pub claims: Option<prost_types::Struct>,
}

/// A JSON value as a protobuf `google.protobuf.Value`.
#[must_use]
pub fn to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `google.protobuf.Struct`.
#[must_use]
pub fn to_struct(o: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn a_request_round_trips_and_claims_keep_their_shape() {
        let r = JwtSvidRequest {
            audience: vec!["billing".into()],
            spiffe_id: String::new(),
        };
        let back = JwtSvidRequest::decode(r.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, r);
        let claims =
            serde_json::json!({"sub": "spiffe://td/x", "exp": 5, "leash": {"chain": ["a"]}});
        let s = to_struct(claims.as_object().unwrap());
        assert_eq!(
            s.fields["exp"].kind,
            Some(prost_types::value::Kind::NumberValue(5.0))
        );
        let Some(prost_types::value::Kind::StructValue(leash)) = &s.fields["leash"].kind else {
            panic!("{s:?}");
        };
        assert!(matches!(
            leash.fields["chain"].kind,
            Some(prost_types::value::Kind::ListValue(_))
        ));
    }
}
