//! The OpenAPI 3.1 document of the API, served at `/openapi.json`.
//!
//! Written by hand: the API is small, and a hand-written document keeps the
//! descriptions in plain words. A test checks that every route of the router
//! is documented and every documented route exists.

use serde_json::{Value, json};

/// Every (method, path) the server routes, as written in the document.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/openapi.json"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("get", "/v1/jobs/{id}/wait"),
    ("get", "/v1/jobs/{id}/output"),
    ("get", "/v1/jobs/{id}/outputs"),
    ("get", "/v1/jobs/{id}/outputs/chunks/{chunk}"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("post", "/v1/jobs/{id}/hold"),
    ("post", "/v1/jobs/{id}/release"),
    ("post", "/v1/jobs/{id}/suspend"),
    ("post", "/v1/jobs/{id}/resume"),
    ("post", "/v1/jobs/{id}/checkpoint"),
    ("post", "/v1/jobs/{id}/migrate"),
    ("get", "/v1/nodes"),
    ("get", "/metrics"),
    ("post", "/v1/users"),
    ("post", "/v1/join"),
    ("post", "/v1/agent/register"),
    ("get", "/v1/agent/actions"),
    ("post", "/v1/agent/events"),
    ("post", "/v1/agent/images"),
    ("put", "/v1/agent/jobs/{id}/output"),
    ("get", "/v1/images"),
    ("put", "/v1/images/{name}"),
    ("put", "/v1/store/chunks/{id}"),
    ("get", "/v1/store/chunks/{id}"),
    ("put", "/v1/store/manifests/{id}"),
    ("get", "/v1/store/manifests/{id}"),
    ("post", "/v1/store/missing"),
];

fn chunk_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": "64 hexadecimal digits (BLAKE3)", "schema": { "type": "string" } })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn errors() -> Value {
    let e = || json!({ "description": "error", "content": json_content(schema_ref("Error")) });
    json!({ "401": e(), "403": e(), "404": e(), "409": e(), "503": e() })
}

fn op(summary: &str, ok_status: &str, ok: Value, body: Option<Value>, params: Value) -> Value {
    let mut responses = errors();
    responses[ok_status] = ok;
    let mut o = json!({
        "summary": summary,
        "parameters": params,
        "responses": responses,
        "security": [{ "bearer": [] }],
    });
    if let Some(b) = body {
        o["requestBody"] = json!({ "required": true, "content": b });
    }
    o
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 1 } })
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": ty } })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

fn control(summary: &str) -> Value {
    json!({ "post": op(summary, "200", ok_json("the job after the change was stored", schema_ref("Job")), None, json!([id_param()])) })
}

/// The document.
pub fn document() -> Value {
    let job_state = json!({
        "type": "string",
        "enum": vgrid_model::JobState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    });
    let submit = {
        let mut o = op(
            "Submit a job file. It is validated (a refusal names line, column and field) and stored before the answer. With an `Idempotency-Key` header, a repeated submission by the same user returns the first job (200) instead of making another; the same key with another job file is a 409.",
            "201",
            ok_json(
                "the job was stored",
                json!({ "type": "object", "required": ["id"], "properties": { "id": { "type": "integer" } } }),
            ),
            Some(json_content(schema_ref("SubmitRequest"))),
            json!([{ "name": "Idempotency-Key", "in": "header", "required": false,
                     "description": "1 to 128 printable ASCII characters chosen by the client; keeps one job per key and user",
                     "schema": { "type": "string" } }]),
        );
        o["responses"]["200"] = ok_json(
            "a job with this idempotency key already existed",
            json!({ "type": "object", "required": ["id"], "properties": { "id": { "type": "integer" } } }),
        );
        o
    };
    let paths = json!({
        "/openapi.json": { "get": {
            "summary": "This document.",
            "security": [],
            "responses": { "200": { "description": "the OpenAPI document", "content": { "application/json": {} } } }
        }},
        "/v1/jobs": {
            "post": submit,
            "get": op(
                "List jobs: the caller's own, with `all` (admin) everyone's, with `user` one user's.",
                "200",
                ok_json("jobs by id", json!({ "type": "array", "items": schema_ref("Job") })),
                None,
                json!([
                    query_param("all", "boolean", "admins: list every user's jobs"),
                    query_param("user", "string", "only this user's jobs (another user's: admins only, else 403)"),
                ]),
            ),
        },
        "/v1/jobs/{id}": { "get": op("A job with its request, state history and checkpoints.", "200",
            ok_json("the job", schema_ref("JobDetail")), None, json!([id_param()])) },
        "/v1/jobs/{id}/wait": { "get": op(
            "Wait for a job to end, up to `wait_ms` (at most 60000). `ended` false means ask again.",
            "200",
            ok_json("the job", json!({ "type": "object", "properties": { "ended": { "type": "boolean" }, "job": schema_ref("Job") } })),
            None,
            json!([id_param(), query_param("wait_ms", "integer", "how long to wait, in milliseconds")]),
        ) },
        "/v1/jobs/{id}/output": { "get": op(
            "The job's output (stdout and stderr of its command) from `offset`. Headers `x-vgrid-next-offset` and `x-vgrid-complete` tell where to go on and whether more will come.",
            "200",
            json!({ "description": "output bytes", "content": { "application/octet-stream": {} } }),
            None,
            json!([id_param(), query_param("offset", "integer", "first byte"), query_param("max_bytes", "integer", "at most this many bytes")]),
        ) },
        "/v1/jobs/{id}/outputs": { "get": op(
            "The data manifest of a job's outputs (the owner's or an admin's; anyone else gets 404 as for a job that does not exist): its files (`path`, `size`, `chunks` as `[id, length]`), collected into the controller's store when the command ended. 409 while the job has not ended; 404 saying why for a job without outputs.",
            "200",
            json!({ "description": "the manifest (JSON); its BLAKE3 hash is its id", "content": { "application/json": {} } }),
            None,
            json!([id_param()]),
        ) },
        "/v1/jobs/{id}/outputs/chunks/{chunk}": { "get": op(
            "A chunk of a job's outputs in its stored form (a codec byte, then the bytes, zstd-compressed or raw; check it against its id): only chunks the job's outputs manifest lists, for the job's owner or an admin (404 otherwise).",
            "200",
            json!({ "description": "the stored chunk", "content": { "application/octet-stream": {} } }),
            None,
            json!([id_param(), { "name": "chunk", "in": "path", "required": true, "description": "64 hexadecimal digits (BLAKE3)", "schema": { "type": "string" } }]),
        ) },
        "/v1/jobs/{id}/cancel": control("Cancel a job; its VMs are stopped."),
        "/v1/jobs/{id}/hold": control("Hold a pending job: it is not scheduled until released."),
        "/v1/jobs/{id}/release": control("Release a held job."),
        "/v1/jobs/{id}/suspend": control("Pause a running job's VMs (kept in memory)."),
        "/v1/jobs/{id}/resume": control("Continue a suspended job."),
        "/v1/jobs/{id}/checkpoint": control("Take a checkpoint of a running job now."),
        "/v1/jobs/{id}/migrate": { "post": op(
            "Move a job to node `to` (or, without it, to any other node): a running job is checkpointed, stopped and resumed there; a starting one is restarted there; a waiting one starts there next. 409 for a running job that cannot be checkpointed.",
            "200",
            ok_json("the job after the request was stored", schema_ref("Job")),
            Some(json_content(json!({ "type": "object", "properties": { "to": { "type": "string" } } }))),
            json!([id_param()]),
        ) },
        "/v1/nodes": { "get": op("List nodes with their capacity, free resources and jobs.", "200",
            ok_json("nodes by name", json!({ "type": "array", "items": schema_ref("Node") })), None, json!([])) },
        "/metrics": { "get": op(
            "Counters and gauges in the Prometheus text format (admin): jobs by state, nodes by state, CPUs, commits and scheduling passes.",
            "200",
            json!({ "description": "Prometheus text", "content": { "text/plain": {} } }),
            None,
            json!([]),
        ) },
        "/v1/users": { "post": op(
            "Add a user (admin). The answer holds the user's token, shown only this once.",
            "201",
            ok_json("the new user and token", json!({ "type": "object", "properties": {
                "id": { "type": "integer" }, "name": { "type": "string" }, "role": schema_ref("Role"), "token": { "type": "string" } } })),
            Some(json_content(json!({ "type": "object", "required": ["name"], "properties": {
                "name": { "type": "string" }, "role": schema_ref("Role") } }))),
            json!([]),
        ) },
        "/v1/join": { "post": {
            "summary": "A node joins: with the secret of the controller's join token (no bearer token), it gets its own credential (an agent token that acts only for this node; a node that joins again gets a new one) and the controller's CA certificate, which it checks against the pin of the join token.",
            "security": [],
            "requestBody": { "required": true, "content": json_content(json!({ "type": "object", "required": ["node", "secret"],
                "properties": { "node": { "type": "string" }, "secret": { "type": "string" } } })) },
            "responses": {
                "200": ok_json("the node's credential", json!({ "type": "object", "properties": {
                    "node": { "type": "string" }, "token": { "type": "string" }, "ca_pem": { "type": "string" } } })),
                "400": { "description": "error", "content": json_content(schema_ref("Error")) },
                "401": { "description": "error", "content": json_content(schema_ref("Error")) },
                "409": { "description": "error", "content": json_content(schema_ref("Error")) },
                "503": { "description": "error", "content": json_content(schema_ref("Error")) }
            }
        }},
        "/v1/agent/register": { "post": op(
            "A node agent announces its node and the job attempts it still runs.",
            "200",
            ok_json("heartbeat period and next action sequence", json!({ "type": "object", "properties": {
                "heartbeat_ms": { "type": "integer" }, "next_seq": { "type": "integer" } } })),
            Some(json_content(json!({ "type": "object", "required": ["name", "cpus", "memory_mb"] }))),
            json!([]),
        ) },
        "/v1/agent/actions": { "get": op(
            "A node agent fetches its actions after sequence `after`, waiting up to `wait_ms`; counts as a heartbeat.",
            "200",
            ok_json("actions in order", json!({ "type": "array", "items": { "type": "object" } })),
            None,
            json!([query_param("node", "string", "node name"), query_param("after", "integer", "last handled sequence"), query_param("wait_ms", "integer", "long-poll time")]),
        ) },
        "/v1/agent/events": { "post": {
            "summary": "A node agent reports job events (booting, running, checkpointed, exited, failed, ...).",
            "security": [{ "bearer": [] }],
            "requestBody": { "required": true, "content": json_content(json!({ "type": "object", "required": ["node", "events"] })) },
            "responses": { "204": { "description": "stored" } },
        } },
        "/v1/agent/jobs/{id}/output": { "put": {
            "summary": "A node agent writes job output at `offset`, cutting off what followed (a resumed job rewinds to its checkpoint).",
            "security": [{ "bearer": [] }],
            "parameters": [id_param(), query_param("node", "string", "node name"), query_param("attempt", "integer", "job attempt"), query_param("offset", "integer", "where the bytes go")],
            "requestBody": { "required": true, "content": { "application/octet-stream": {} } },
            "responses": { "204": { "description": "written" } },
        } },
        "/v1/agent/images": { "post": op(
            "A node agent says which images its node holds now (after fetching one); placement prefers nodes that hold a job's image.",
            "204",
            json!({ "description": "taken" }),
            Some(json_content(json!({ "type": "object", "required": ["node", "images"], "properties": {
                "node": { "type": "string" }, "images": { "type": "array", "items": { "type": "string" } } } }))),
            json!([]),
        ) },
        "/v1/images": { "get": op(
            "The images the controller's store holds: name, manifest and size. A node fetches an image it lacks from them before it boots a job's VMs.",
            "200",
            ok_json("images by name", json!({ "type": "array", "items": { "type": "object", "properties": {
                "name": { "type": "string" }, "manifest": { "type": "string" }, "size": { "type": "integer" } } } })),
            None,
            json!([]),
        ) },
        "/v1/images/{name}": { "put": op(
            "Names an image's manifest (admin): the manifest must be in the store, complete, and an image's.",
            "204",
            json!({ "description": "named" }),
            Some(json_content(json!({ "type": "object", "required": ["manifest"], "properties": { "manifest": { "type": "string" } } }))),
            json!([{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }]),
        ) },
        "/v1/store/chunks/{id}": {
            "put": op(
                "Stores a chunk (agents, admins, and users sending a job's inputs): the body is its stored form (a codec byte, then the bytes, zstd-compressed or raw); it must hash (BLAKE3, uncompressed) to its id.",
                "201",
                json!({ "description": "stored (200: it was there)" }),
                Some(json!({ "application/octet-stream": {} })),
                json!([chunk_param()]),
            ),
            "get": op(
                "A chunk's stored form (agents, admins), verified before it is sent.",
                "200",
                json!({ "description": "the stored chunk", "content": { "application/octet-stream": {} } }),
                None,
                json!([chunk_param()]),
            ),
        },
        "/v1/store/manifests/{id}": {
            "put": op(
                "Stores a manifest (agents, admins; users only manifests of kind `data`, 403 otherwise): it must hash to its id, parse, and have every chunk in the store already (409 otherwise; a user's may name only chunks that user sent). A data manifest a user or an admin sends is recorded as theirs: a submission of theirs may name it as `input_data`.",
                "201",
                json!({ "description": "stored" }),
                Some(json!({ "application/json": {} })),
                json!([chunk_param()]),
            ),
            "get": op(
                "A manifest's bytes (agents, admins).",
                "200",
                json!({ "description": "the manifest", "content": { "application/json": {} } }),
                None,
                json!([chunk_param()]),
            ),
        },
        "/v1/store/missing": { "post": op(
            "Which of these chunks the store lacks (agents, admins, users; to a user, a chunk the user did not send is missing): what an upload still has to send, so that a broken upload goes on where it stopped.",
            "200",
            ok_json("the chunks the store lacks", json!({ "type": "object", "properties": { "chunks": { "type": "array", "items": { "type": "string" } } } })),
            Some(json_content(json!({ "type": "object", "required": ["chunks"], "properties": { "chunks": { "type": "array", "items": { "type": "string" } } } }))),
            json!([]),
        ) },
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "vgrid controller API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit and control batch jobs that run in virtual machines. Every call needs `Authorization: Bearer <token>`; a user sees and controls only their own jobs, an admin every job. Errors are JSON: `{\"error\": code, \"message\": text}`.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Role": { "type": "string", "enum": ["user", "admin", "agent"] },
                "JobState": job_state,
                "Error": { "type": "object", "required": ["error", "message"], "properties": {
                    "error": { "type": "string", "enum": ["unauthorized", "forbidden", "not-found", "invalid-job-file", "bad-request", "conflict", "unavailable", "internal"] },
                    "message": { "type": "string" },
                    "diagnostic": { "type": "object", "description": "for a refused job file: file, line, column, field, message", "properties": {
                        "file": { "type": "string" }, "line": { "type": "integer" }, "column": { "type": "integer" },
                        "field": { "type": ["string", "null"] }, "message": { "type": "string" } } } } },
                "SubmitRequest": { "type": "object", "required": ["file_name", "source"], "properties": {
                    "file_name": { "type": "string", "description": "used in error messages" },
                    "source": { "type": "string", "description": "the TOML text of the job file (docs/jobs.md)" },
                    "hold": { "type": "boolean" },
                    "input_data": { "type": "string", "description": "the data manifest (64 hexadecimal digits) holding the job's inputs, one file per input named by the file name of its `to`, uploaded by the same user to the store first; required exactly when the job file has `inputs`" } } },
                "Job": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "name": { "type": "string" }, "owner": { "type": "string" },
                    "state": schema_ref("JobState"), "reason": { "type": "string" }, "node": { "type": ["string", "null"] },
                    "class": { "type": "string" }, "image": { "type": "string" }, "cpus": { "type": "integer" },
                    "memory_mb": { "type": "integer" }, "vms": { "type": "integer" }, "exit_code": { "type": ["integer", "null"] },
                    "submitted_unix_ms": { "type": "integer" }, "updated_unix_ms": { "type": "integer" } } },
                "JobDetail": { "type": "object", "properties": {
                    "job": schema_ref("Job"),
                    "spec": { "type": "object", "description": "the validated job file" },
                    "history": { "type": "array", "items": { "type": "object", "properties": {
                        "unix_ms": { "type": "integer" }, "state": schema_ref("JobState"),
                        "reason": { "type": "string" }, "node": { "type": ["string", "null"] } } } },
                    "checkpoints": { "type": "array", "items": { "type": "object" } },
                    "outputs": { "type": "string", "description": "the data manifest of the job's outputs, once collected (`GET /v1/jobs/{id}/outputs`)" } } },
                "Node": { "type": "object", "properties": {
                    "name": { "type": "string" }, "state": { "type": "string", "enum": ["up", "lost", "drained"] },
                    "cpus": { "type": "integer" }, "memory_mb": { "type": "integer" },
                    "free_cpus": { "type": "integer" }, "free_memory_mb": { "type": "integer" },
                    "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                    "jobs": { "type": "array", "items": { "type": "integer" } },
                    "last_seen_unix_ms": { "type": "integer" } } },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths object");
        let mut documented = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling reference to {name}");
        }
    }
}
