//! `attach batch`: hostbrick as a library behind a pipe. One JSON request per line on stdin,
//! one JSON answer per request on stdout, every call made in this one process (as an
//! orchestrator linking hostbrick makes them), connectors kept from call to call.
//!
//! The protocol is the one of the VM suite's os-brick driver (`tests/vm/guest/osbrick_driver.py`),
//! so that a scenario drives both the same way. The first line written is
//! `{"ready": true, "version": ...}`; then, for each request:
//!
//! ```text
//! {"op": "properties", "ip": IP, "host": NAME, "multipath": BOOL, "enforce_multipath": BOOL}
//! {"op": "connect", VOLUME, "use_multipath": BOOL}
//! {"op": "disconnect", VOLUME, "use_multipath": BOOL, "device_info": RECORD, "force": BOOL, "ignore_errors": BOOL}
//! {"op": "extend", VOLUME, "use_multipath": BOOL}
//! {"op": "connect_many", "requests": [CONNECT, ...]}
//! {"op": "disconnect_many", "requests": [DISCONNECT, ...]}
//! {"op": "quit"}
//! ```
//!
//! `VOLUME` is `"connection_info": {...}` (Cinder's, `driver_volume_type` and `data`) or, as
//! os-brick takes it, `"protocol": "ISCSI", "connection_properties": {...}` (the `data`),
//! with, for an encrypted volume, `"encryption": {...}` (Cinder's encryption metadata, else
//! the connection_info's top-level `encryption` key; the keys come from `--key-dir`): connect then opens it and answers the record with
//! `encryption`, extend answers the decrypted size, and a disconnect whose `device_info`
//! has `encryption` closes the mapping first (no key or metadata needed).
//! Every key but `op` and the volume is optional: properties default to the command line's
//! `--ip`, `--host`, `--multipath`, `--enforce-multipath`; `use_multipath` (os-brick's
//! connector flag) to `--multipath` (`--enforce-multipath` makes it enforced);
//! `device_info` is the record a connect returned. Unknown keys are refused.
//!
//! `connect_many` and `disconnect_many` run their requests (the keys of `connect` and
//! `disconnect`, `op` optional) at once, each on its own thread, all started together.
//!
//! Answers: `{"ok": true, "result": ..., "secs": S}` or `{"ok": false, "error": {"kind": ...,
//! "message": ...}, "secs": S}`, `secs` the time the call took in this process. Results:
//! properties, the connector properties; connect, the device record; disconnect, `null`
//! (with `--ignore-errors`-style failures carried past: `{"ignored_failures": [ERROR, ...]}`);
//! extend, the new size in bytes; the `_many` ops, the list of each request's answer, in
//! order (`ok` only when every one succeeded; otherwise the error kind is `partial`). A line
//! that is not a request gets an `invalid_request` answer; nothing ends the loop but `quit`
//! and the end of stdin.

use std::io::{BufRead, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use hostbrick::encryption::KeyManager;
use hostbrick::{
    connector_for, get_connector_properties, ConnectionInfo, Connector, ConnectorOptions,
    DeviceRecord, DisconnectOptions, MultipathMode, Protocol,
};

use crate::crypt;
use serde_json::{json, Map, Value};

/// The longest request line read; a longer one is answered `invalid_request` and skipped.
pub const MAX_LINE: usize = 1 << 20;
/// The most requests one `connect_many` / `disconnect_many` takes (one thread each).
pub const MAX_MANY: usize = 256;

/// A failed request: `{"kind", "message"}` in the answer.
#[derive(Debug)]
struct Failure {
    kind: String,
    message: String,
}

impl Failure {
    fn request(message: impl Into<String>) -> Self {
        Failure {
            kind: "invalid_request".into(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"kind": self.kind, "message": self.message})
    }
}

impl From<hostbrick::Error> for Failure {
    fn from(e: hostbrick::Error) -> Self {
        Failure {
            kind: e.kind().into(),
            message: e.chain(),
        }
    }
}

type Request = Map<String, Value>;

/// What a request asks for, checked.
enum Op {
    Properties {
        ip: String,
        host: String,
        multipath: bool,
        enforce: bool,
    },
    Connect(Call),
    Disconnect(Box<Detach>),
    Extend(Call),
    Many(Vec<Result<Op, Failure>>),
    Quit,
}

/// A disconnect: the volume, the record connect returned (if given), the options.
struct Detach {
    call: Call,
    device: Option<DeviceRecord>,
    options: DisconnectOptions,
}

/// One volume with the connector that serves it.
struct Call {
    info: ConnectionInfo,
    connector: Arc<dyn Connector>,
}

/// Whether to go on reading requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next request.
    Continue,
    /// `quit`: stop.
    Quit,
}

/// A connector made, by protocol and multipath mode.
type Made = (Protocol, MultipathMode, Arc<dyn Connector>);

/// The batch server: the command line's options and the connectors made so far.
pub struct Batch {
    options: ConnectorOptions,
    ip: String,
    host: String,
    connectors: Mutex<Vec<Made>>,
    answering: Arc<Mutex<()>>,
    keys: Arc<dyn KeyManager>,
}

impl Batch {
    /// A server whose connectors start from `options` (its multipath mode is the default of
    /// `use_multipath`) and whose properties default to `ip` and `host`.
    pub fn new(options: ConnectorOptions, ip: String, host: String) -> Self {
        Batch {
            options,
            ip,
            host,
            connectors: Mutex::new(Vec::new()),
            answering: Arc::new(Mutex::new(())),
            keys: Arc::new(crypt::NoKeys),
        }
    }

    /// The key manager of encrypted volumes (`--key-dir`); without it an encrypted volume's
    /// connect or extend fails naming the flag.
    pub fn with_keys(mut self, keys: Arc<dyn KeyManager>) -> Self {
        self.keys = keys;
        self
    }

    /// Holds `lock` from reading each request to writing its answer: whoever takes it
    /// between requests (to exit after a signal) cuts no answer in half.
    pub fn answering_under(mut self, lock: Arc<Mutex<()>>) -> Self {
        self.answering = lock;
        self
    }

    /// Answers every request line of `input` on `output` (after the ready line) until
    /// `quit` or the end of the input. Fails only when reading or writing fails.
    pub fn serve(&self, mut input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
        let ready = json!({"ready": true, "version": env!("CARGO_PKG_VERSION")});
        writeln!(output, "{ready}")?;
        output.flush()?;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut input)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            let _answering = self.answering.lock().unwrap_or_else(|p| p.into_inner());
            let answer = if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
                skip_line(&mut input)?;
                Some((
                    failed(
                        &Failure::request(format!("line longer than {MAX_LINE} bytes")),
                        0.0,
                    ),
                    Flow::Continue,
                ))
            } else {
                match std::str::from_utf8(&buf) {
                    Ok(line) => self.answer(line),
                    Err(_) => Some((
                        failed(&Failure::request("line is not UTF-8"), 0.0),
                        Flow::Continue,
                    )),
                }
            };
            let Some((answer, flow)) = answer else {
                continue;
            };
            writeln!(output, "{answer}")?;
            output.flush()?;
            if flow == Flow::Quit {
                return Ok(());
            }
        }
    }

    /// The answer to one request line (`None` for a blank line) and whether to go on.
    pub fn answer(&self, line: &str) -> Option<(Value, Flow)> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        let start = Instant::now();
        let op = serde_json::from_str::<Value>(line)
            .map_err(|e| Failure::request(format!("not JSON: {e}")))
            .and_then(|v| match v {
                Value::Object(req) => self.parse(&req, None),
                _ => Err(Failure::request("not a JSON object")),
            });
        let op = match op {
            Ok(op) => op,
            Err(f) => return Some((failed(&f, secs(start)), Flow::Continue)),
        };
        Some(match op {
            Op::Quit => (json!({"ok": true, "result": null, "secs": 0}), Flow::Quit),
            Op::Many(items) => (self.run_many(items, start), Flow::Continue),
            op => (
                match guarded(|| self.run(op)) {
                    Ok(result) => json!({"ok": true, "result": result, "secs": secs(start)}),
                    Err(f) => failed(&f, secs(start)),
                },
                Flow::Continue,
            ),
        })
    }

    /// Checks a request; `within` is the op of the `_many` request it is an item of.
    fn parse(&self, req: &Request, within: Option<&str>) -> Result<Op, Failure> {
        let op = match (req.get("op"), within) {
            (None, Some(op)) => op,
            (Some(Value::String(s)), None) => s.as_str(),
            (Some(Value::String(s)), Some(op)) if s == op => op,
            (Some(Value::String(s)), Some(op)) => {
                return Err(Failure::request(format!(
                    "an item of {op}_many has op {s:?}"
                )))
            }
            (Some(_), _) => return Err(Failure::request("op is not a string")),
            (None, None) => return Err(Failure::request("op missing")),
        };
        const VOLUME: [&str; 5] = [
            "connection_info",
            "protocol",
            "connection_properties",
            "use_multipath",
            "encryption",
        ];
        match op {
            "properties" if within.is_none() => {
                only(req, &["ip", "host", "multipath", "enforce_multipath"])?;
                let multipath = flag(req, "multipath")?.unwrap_or(self.options.multipath.is_on());
                Ok(Op::Properties {
                    ip: text(req, "ip")?.unwrap_or_else(|| self.ip.clone()),
                    host: text(req, "host")?.unwrap_or_else(|| self.host.clone()),
                    multipath,
                    enforce: flag(req, "enforce_multipath")?
                        .unwrap_or(self.options.multipath.is_enforced()),
                })
            }
            "connect" => {
                only(req, &VOLUME)?;
                Ok(Op::Connect(self.call(req, None)?))
            }
            "extend" if within.is_none() => {
                only(req, &VOLUME)?;
                Ok(Op::Extend(self.call(req, None)?))
            }
            "disconnect" => {
                let mut keys = VOLUME.to_vec();
                keys.extend(["device_info", "force", "ignore_errors"]);
                only(req, &keys)?;
                let device = match req.get("device_info") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(DeviceRecord::from_json(&v.to_string())?),
                };
                let options = DisconnectOptions {
                    force: flag(req, "force")?.unwrap_or(false),
                    ignore_errors: flag(req, "ignore_errors")?.unwrap_or(false),
                };
                Ok(Op::Disconnect(Box::new(Detach {
                    call: self.call(req, device.as_ref())?,
                    device,
                    options,
                })))
            }
            "connect_many" | "disconnect_many" if within.is_none() => {
                only(req, &["requests"])?;
                let items = match req.get("requests") {
                    Some(Value::Array(items)) => items,
                    Some(_) => return Err(Failure::request("requests is not a list")),
                    None => return Err(Failure::request("requests missing")),
                };
                if items.len() > MAX_MANY {
                    return Err(Failure::request(format!(
                        "{} requests; at most {MAX_MANY} at once",
                        items.len()
                    )));
                }
                let item_op = op.trim_end_matches("_many");
                Ok(Op::Many(
                    items
                        .iter()
                        .map(|item| match item {
                            Value::Object(r) => self.parse(r, Some(item_op)),
                            _ => Err(Failure::request("a request is not a JSON object")),
                        })
                        .collect(),
                ))
            }
            "quit" if within.is_none() => {
                only(req, &[])?;
                Ok(Op::Quit)
            }
            other => Err(Failure::request(format!("unknown op {other:?}"))),
        }
    }

    /// The volume of a request and its connector: wrapped to open and close the volume's
    /// encryption when the request's `encryption` metadata (or, to detach, `device`) asks
    /// for it.
    fn call(&self, req: &Request, device: Option<&DeviceRecord>) -> Result<Call, Failure> {
        let mode = match flag(req, "use_multipath")? {
            None => self.options.multipath,
            Some(false) => MultipathMode::Off,
            Some(true) if self.options.multipath.is_enforced() => MultipathMode::Enforced,
            Some(true) => MultipathMode::Optional,
        };
        let info = match (
            req.get("connection_info"),
            req.get("protocol"),
            req.get("connection_properties"),
        ) {
            (Some(ci), None, None) => ConnectionInfo::from_value(ci)?,
            (None, Some(Value::String(p)), Some(data)) => {
                ConnectionInfo::from_value(&json!({"driver_volume_type": p, "data": data}))?
            }
            (None, Some(_), Some(_)) => return Err(Failure::request("protocol is not a string")),
            _ => {
                return Err(Failure::request(
                    "give connection_info, or protocol and connection_properties",
                ))
            }
        };
        // The request's own key, else the connection_info's top-level one.
        let encryption = req
            .get("encryption")
            .or_else(|| {
                req.get("connection_info")
                    .and_then(|ci| ci.get("encryption"))
            })
            .filter(|v| !v.is_null());
        let meta = crypt::metadata(encryption)?;
        let connector = crypt::wrap(
            self.connector(info.protocol(), mode)?,
            &self.options.context,
            self.options.operation_timeout,
            self.keys.clone(),
            meta,
            device,
        );
        Ok(Call { info, connector })
    }

    /// The connector for `protocol` in `mode`, made on first use.
    fn connector(
        &self,
        protocol: Protocol,
        mode: MultipathMode,
    ) -> hostbrick::Result<Arc<dyn Connector>> {
        let mut made = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, c)) = made.iter().find(|(p, m, _)| *p == protocol && *m == mode) {
            return Ok(c.clone());
        }
        let c: Arc<dyn Connector> = Arc::from(connector_for(
            protocol,
            self.options.clone().multipath(mode),
        )?);
        made.push((protocol, mode, c.clone()));
        Ok(c)
    }

    /// Runs one call (not quit, not many).
    fn run(&self, op: Op) -> Result<Value, Failure> {
        match op {
            Op::Properties {
                ip,
                host,
                multipath,
                enforce,
            } => {
                let props = get_connector_properties(
                    &self.options.context,
                    &ip,
                    multipath,
                    enforce,
                    &host,
                )?;
                to_value(&props)
            }
            Op::Connect(c) => to_value(&c.connector.connect_volume(&c.info)?),
            Op::Disconnect(d) => {
                let Detach {
                    call: c,
                    device,
                    options,
                } = *d;
                let done = c
                    .connector
                    .disconnect_volume(&c.info, device.as_ref(), options)?;
                if done.failures.is_empty() {
                    Ok(Value::Null)
                } else {
                    let failures: Vec<Value> = done
                        .failures
                        .into_iter()
                        .map(|e| Failure::from(e).to_json())
                        .collect();
                    Ok(json!({"ignored_failures": failures}))
                }
            }
            Op::Extend(c) => Ok(json!(c.connector.extend_volume(&c.info)?)),
            Op::Many(_) | Op::Quit => Err(Failure::request("not a single call")),
        }
    }

    /// Runs the items of a `_many` request at once, one thread each, all started together.
    fn run_many(&self, items: Vec<Result<Op, Failure>>, start: Instant) -> Value {
        let count = items.iter().filter(|i| i.is_ok()).count();
        let barrier = Barrier::new(count);
        let answers: Vec<Value> = std::thread::scope(|s| {
            let running: Vec<_> = items
                .into_iter()
                .map(|item| match item {
                    Ok(op) => {
                        let barrier = &barrier;
                        Ok(s.spawn(move || {
                            barrier.wait();
                            let t0 = Instant::now();
                            let r = guarded(|| self.run(op));
                            (r, secs(t0))
                        }))
                    }
                    Err(f) => Err(f),
                })
                .collect();
            running
                .into_iter()
                .map(|r| match r {
                    Ok(handle) => match handle.join() {
                        Ok((Ok(result), t)) => json!({"ok": true, "result": result, "secs": t}),
                        Ok((Err(f), t)) => failed(&f, t),
                        Err(_) => failed(&panicked(), 0.0),
                    },
                    Err(f) => failed(&f, 0.0),
                })
                .collect()
        });
        let total = answers.len();
        let bad = answers.iter().filter(|a| a["ok"] != json!(true)).count();
        let mut answer = json!({"ok": bad == 0, "result": answers, "secs": secs(start)});
        if bad > 0 {
            let partial = Failure {
                kind: "partial".into(),
                message: format!("{bad} of {total} requests failed"),
            };
            answer["error"] = partial.to_json();
        }
        answer
    }
}

/// Reads and drops the rest of an over-long line.
fn skip_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

/// Runs `f`; a panic becomes a `panic` failure instead of ending the server.
fn guarded(f: impl FnOnce() -> Result<Value, Failure>) -> Result<Value, Failure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(panicked()))
}

fn panicked() -> Failure {
    Failure {
        kind: "panic".into(),
        message: "the call panicked (see stderr)".into(),
    }
}

fn failed(f: &Failure, secs: f64) -> Value {
    json!({"ok": false, "error": f.to_json(), "secs": secs})
}

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

fn to_value(v: &impl serde::Serialize) -> Result<Value, Failure> {
    serde_json::to_value(v).map_err(|e| Failure {
        kind: "parse".into(),
        message: format!("cannot encode the result: {e}"),
    })
}

/// Refuses keys other than `op` and `allowed`.
fn only(req: &Request, allowed: &[&str]) -> Result<(), Failure> {
    match req
        .keys()
        .find(|k| *k != "op" && !allowed.contains(&k.as_str()))
    {
        Some(k) => Err(Failure::request(format!("unknown key {k:?}"))),
        None => Ok(()),
    }
}

fn flag(req: &Request, key: &str) -> Result<Option<bool>, Failure> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Failure::request(format!("{key} is not true or false"))),
    }
}

fn text(req: &Request, key: &str) -> Result<Option<String>, Failure> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Failure::request(format!("{key} is not a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostbrick::testing::sim::iscsi::{IscsiSim, IQN, WWID_1, WWID_2};
    use hostbrick::testing::sim::MIB;

    const WWID_3: &str = "naa.6001405ccccccccccccccccccccccc3";
    const PORTAL: &str = "127.0.0.1:3260";

    fn server(sim: &IscsiSim) -> Batch {
        Batch::new(sim.options(), "192.0.2.1".into(), "host1".into())
    }

    /// Serves `input` and returns the lines written.
    fn serve(batch: &Batch, input: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        batch.serve(input, &mut out).expect("serve");
        String::from_utf8(out)
            .expect("UTF-8 output")
            .lines()
            .map(|l| serde_json::from_str(l).expect("every output line is JSON"))
            .collect()
    }

    fn ask(batch: &Batch, req: Value) -> Value {
        batch.answer(&req.to_string()).expect("an answer").0
    }

    /// os-brick's shape: protocol + connection_properties (Cinder's `data`).
    fn volume(lun: u64) -> Value {
        json!({"protocol": "ISCSI", "connection_properties": {
            "target_portal": PORTAL, "target_iqn": IQN, "target_lun": lun,
            "volume_id": format!("vol-{lun}"), "target_discovered": false}})
    }

    fn with(mut base: Value, extra: Value) -> Value {
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn error_kind(answer: &Value) -> &str {
        assert_eq!(answer["ok"], json!(false), "{answer}");
        answer["error"]["kind"].as_str().expect("error.kind")
    }

    #[test]
    fn cancelled_calls_answer_kind_cancelled_and_leave_nothing() {
        let sim = IscsiSim::new();
        sim.add_target(PORTAL, &[(0, WWID_1, 16 * MIB)]);
        // The session stays in recovery after the login: the connect waits to scan LUN 5.
        sim.fail_sessions_after_login(true);
        let cancel = hostbrick::Cancel::new();
        let batch = Batch::new(
            sim.options().cancel(cancel.clone()),
            "192.0.2.1".into(),
            "host1".into(),
        );
        let fire = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            cancel.cancel();
        });
        let a = ask(
            &batch,
            json!({"op": "connect", "protocol": "ISCSI", "connection_properties": {
            "target_portal": PORTAL, "target_iqn": IQN, "target_lun": 5, "volume_id": "vol-5"}}),
        );
        fire.join().unwrap();
        assert_eq!(error_kind(&a), "cancelled", "{a}");
        assert!(
            a["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("cancelled while waiting for LUN 5")),
            "{a}"
        );
        sim.assert_clean();
        // Once cancelled, every call is.
        let a = ask(&batch, with(json!({"op": "connect"}), volume(0)));
        assert_eq!(error_kind(&a), "cancelled", "{a}");
        sim.assert_clean();
    }

    #[test]
    fn bad_lines_get_error_answers_and_the_loop_goes_on() {
        let sim = IscsiSim::new();
        let batch = server(&sim);
        let mut input = Vec::new();
        for line in [
            "not json",
            "[1, 2]",
            r#"{"op": "launch"}"#,
            r#"{"no_op": 1}"#,
            r#"{"op": 7}"#,
            r#"{"op": "connect"}"#,
            r#"{"op": "connect", "protocol": "ISCSI", "connection_properties": {}, "colour": 1}"#,
            r#"{"op": "connect", "protocol": "FC", "connection_properties": {}}"#,
            r#"{"op": "connect", "protocol": "ISCSI", "connection_properties": {}, "use_multipath": "yes"}"#,
            r#"{"op": "disconnect", "protocol": "ISCSI", "connection_properties": {"target_portal": "127.0.0.1:3260", "target_iqn": "iqn.2003-01.org.x:t", "target_lun": 0}, "device_info": {"type": 5}}"#,
            r#"{"op": "connect_many", "requests": {}}"#,
            r#"{"op": "connect_many", "requests": [{"op": "disconnect"}]}"#,
            "",
            "   ",
        ] {
            input.extend_from_slice(line.as_bytes());
            input.push(b'\n');
        }
        input.extend_from_slice(b"\xff\xfe\n");
        input.extend_from_slice(&vec![b'x'; MAX_LINE + 10]);
        input.extend_from_slice(
            b"\n{\"op\": \"properties\"}\n{\"op\": \"quit\"}\n{\"op\": \"properties\"}\n",
        );
        let out = serve(&batch, &input);
        assert_eq!(out[0]["ready"], json!(true));
        let kinds: Vec<&str> = out[1..out.len() - 2].iter().map(error_kind).collect();
        assert_eq!(
            kinds,
            [
                "invalid_request",
                "invalid_request",
                "invalid_request",
                "invalid_request",
                "invalid_request",
                "invalid_request",
                "invalid_request",
                "invalid_connector_protocol",
                "invalid_request",
                "invalid_device_record",
                "invalid_request",
                "partial",
                "invalid_request",
                "invalid_request",
            ],
            "{out:#?}"
        );
        // the item of the wrong op is answered in the list
        assert_eq!(error_kind(&out[12]["result"][0]), "invalid_request");
        // after all that, a good request; quit ends the loop (the last line is not read)
        let props = &out[out.len() - 2];
        assert_eq!(props["ok"], json!(true), "{props}");
        assert_eq!(props["result"]["ip"], json!("192.0.2.1"));
        assert_eq!(props["result"]["host"], json!("host1"));
        assert_eq!(
            out[out.len() - 1],
            json!({"ok": true, "result": null, "secs": 0})
        );
        assert!(sim.runner.calls().iter().all(|c| !c.contains("iscsiadm")));
    }

    #[test]
    fn end_of_input_ends_the_loop() {
        let sim = IscsiSim::new();
        let out = serve(
            &server(&sim),
            b"{\"op\": \"properties\", \"multipath\": true}",
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1]["result"]["multipath"], json!(true), "{}", out[1]);
    }

    #[test]
    fn connect_extend_disconnect_in_one_process() {
        let sim = IscsiSim::new();
        sim.add_target(PORTAL, &[(1, WWID_1, MIB)]);
        let batch = server(&sim);

        let a = ask(&batch, with(volume(1), json!({"op": "connect"})));
        assert_eq!(a["ok"], json!(true), "{a}");
        assert!(a["secs"].as_f64().is_some());
        let record = a["result"].clone();
        assert_eq!(record["type"], json!("block"));
        assert_eq!(sim.session_count(), 1);

        // Cinder's whole connection_info works as well
        let info =
            json!({"driver_volume_type": "iscsi", "data": volume(1)["connection_properties"]});
        let e = ask(&batch, json!({"op": "extend", "connection_info": info}));
        assert_eq!(e["result"], json!(MIB), "{e}");

        let d = ask(
            &batch,
            with(
                volume(1),
                json!({"op": "disconnect", "device_info": record}),
            ),
        );
        assert_eq!(d, json!({"ok": true, "result": null, "secs": d["secs"]}));
        sim.assert_clean();

        // one connector per protocol and multipath mode, kept from call to call
        ask(
            &batch,
            with(volume(1), json!({"op": "connect", "use_multipath": false})),
        );
        ask(
            &batch,
            with(
                volume(1),
                json!({"op": "disconnect", "use_multipath": false}),
            ),
        );
        assert_eq!(batch.connectors.lock().unwrap().len(), 1);
        sim.assert_clean();
    }

    #[derive(Debug)]
    struct OneKey;

    impl KeyManager for OneKey {
        fn key(&self, key_id: &str) -> hostbrick::Result<hostbrick::encryption::EncryptionKey> {
            match key_id {
                "k1" => Ok(hostbrick::encryption::EncryptionKey::symmetric(vec![
                    0xa5;
                    32
                ])),
                _ => Err(hostbrick::Error::KeyNotFound {
                    key_id: key_id.into(),
                }),
            }
        }
    }

    #[test]
    fn encrypted_volumes_open_on_connect_and_close_on_disconnect() {
        use hostbrick::testing::sim::crypt::{CryptSim, LUKS2_OFFSET};
        let sim = IscsiSim::new();
        sim.add_target(PORTAL, &[(1, WWID_1, 64 * MIB)]);
        let crypt = CryptSim::on(&sim.fake, &sim.runner);
        let enc = json!({"provider": "luks2", "encryption_key_id": "k1",
                         "control_location": "front-end"});

        // Without --key-dir: refused naming the flag, nothing left attached.
        let a = ask(
            &server(&sim),
            with(volume(1), json!({"op": "connect", "encryption": enc})),
        );
        assert_eq!(error_kind(&a), "invalid_argument", "{a}");
        assert!(a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--key-dir"));
        sim.assert_clean();

        let batch = server(&sim).with_keys(Arc::new(OneKey));
        let a = ask(
            &batch,
            with(volume(1), json!({"op": "connect", "encryption": enc})),
        );
        assert_eq!(a["ok"], json!(true), "{a}");
        let record = a["result"].clone();
        let name = record["encryption"]["name"].as_str().unwrap().to_string();
        assert!(name.starts_with("crypt-sd"), "{record}");
        assert_eq!(
            record["encryption"]["device"],
            json!(format!("/dev/mapper/{name}"))
        );
        assert_eq!(crypt.mappings().len(), 1);
        assert!(sim
            .runner
            .calls()
            .iter()
            .all(|c| !c.contains(&"a5".repeat(32))));

        // The connection_info's own `encryption` key works as well.
        let info = json!({"driver_volume_type": "iscsi", "encryption": enc,
                          "data": volume(1)["connection_properties"]});
        sim.resize(WWID_1, 128 * MIB);
        let e = ask(&batch, json!({"op": "extend", "connection_info": info}));
        assert_eq!(e["result"], json!(128 * MIB - LUKS2_OFFSET), "{e}");

        // The record alone closes the mapping: no metadata, no key.
        let d = ask(
            &server(&sim),
            with(
                volume(1),
                json!({"op": "disconnect", "device_info": record}),
            ),
        );
        assert_eq!(d["ok"], json!(true), "{d}");
        assert!(crypt.mappings().is_empty());
        sim.assert_clean();

        // A key id the manager lacks: typed, nothing left.
        let bad = json!({"provider": "luks", "encryption_key_id": "k2"});
        let a = ask(
            &batch,
            with(volume(1), json!({"op": "connect", "encryption": bad})),
        );
        assert_eq!(error_kind(&a), "key_not_found", "{a}");
        sim.assert_clean();
        let a = ask(
            &batch,
            with(
                volume(1),
                json!({"op": "connect", "encryption": {"provider": "rot13"}}),
            ),
        );
        assert_eq!(error_kind(&a), "invalid_encryption", "{a}");
    }

    #[test]
    fn many_calls_run_at_once_and_each_is_answered() {
        let sim = IscsiSim::new();
        sim.add_target(
            PORTAL,
            &[(0, WWID_1, MIB), (1, WWID_2, MIB), (2, WWID_3, MIB)],
        );
        let batch = server(&sim);
        let connects: Vec<Value> = (0..3).map(volume).collect();
        let a = ask(&batch, json!({"op": "connect_many", "requests": connects}));
        assert_eq!(a["ok"], json!(true), "{a:#}");
        let answers = a["result"].as_array().unwrap();
        assert_eq!(answers.len(), 3);
        let mut paths: Vec<&str> = answers
            .iter()
            .map(|r| r["result"]["path"].as_str().expect("a device path"))
            .collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 3, "three devices: {paths:?}");
        assert_eq!(sim.session_count(), 1, "one shared session");

        let disconnects: Vec<Value> = (0..3)
            .map(|l| {
                with(
                    volume(l),
                    json!({"op": "disconnect", "device_info": answers[l as usize]["result"]}),
                )
            })
            .collect();
        let d = ask(
            &batch,
            json!({"op": "disconnect_many", "requests": disconnects}),
        );
        assert_eq!(d["ok"], json!(true), "{d:#}");
        assert_eq!(d["result"].as_array().unwrap().len(), 3);
        sim.assert_clean();

        // a failed item: the others still run, the answer says which
        let mixed =
            json!({"op": "connect_many", "requests": [volume(0), volume(9), {"protocol": 1}]});
        let m = ask(&batch, mixed);
        assert_eq!(error_kind(&m), "partial");
        assert_eq!(m["error"]["message"], json!("2 of 3 requests failed"));
        assert_eq!(m["result"][0]["ok"], json!(true), "{m:#}");
        assert_eq!(error_kind(&m["result"][1]), "volume_device_not_found");
        assert_eq!(error_kind(&m["result"][2]), "invalid_request");
        let rec = m["result"][0]["result"].clone();
        let d = ask(
            &batch,
            with(volume(0), json!({"op": "disconnect", "device_info": rec})),
        );
        assert_eq!(d["ok"], json!(true), "{d}");
        sim.assert_clean();

        // an empty list is fine too
        let e = ask(&batch, json!({"op": "disconnect_many", "requests": []}));
        assert_eq!(e["ok"], json!(true));
        assert_eq!(e["result"], json!([]));
    }
}
