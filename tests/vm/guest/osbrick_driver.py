#!/usr/bin/env python3
"""os-brick behind a pipe, for the VM suite's os-brick scenarios (18-osbrick-interop,
19-osbrick-side-by-side).

One long-lived process (importing os-brick takes ~20 s under emulation): it reads one JSON
request per line on stdin and answers one JSON line on stdout. Everything else (os-brick's
and oslo's logging, stray prints) goes to stderr.

    {"op": "properties", "ip": "127.0.0.1", "multipath": true, "enforce_multipath": false}
    {"op": "connect", "protocol": "ISCSI", "use_multipath": false, "connection_properties": {...}}
    {"op": "disconnect", "protocol": "ISCSI", "use_multipath": false,
     "connection_properties": {...}, "device_info": {...}, "force": false, "ignore_errors": false}
    {"op": "extend", "protocol": "ISCSI", "use_multipath": false, "connection_properties": {...}}
    {"op": "encryptor_attach", "connection_info": {...}, "encryption": {...}, "key_dir": DIR}
    {"op": "encryptor_detach", "connection_info": {...}, "encryption": {...}, "key_dir": DIR}
    {"op": "encryptor_extend", "connection_info": {...}, "encryption": {...}, "key_dir": DIR}
    {"op": "connect_many", "requests": [{connect request, "op" optional}, ...]}
    {"op": "disconnect_many", "requests": [{disconnect request, "op" optional}, ...]}
    {"op": "quit"}

Answers: {"ok": true, "result": ..., "secs": S} or {"ok": false, "error": {"kind": "Type",
"message": "..."}, "traceback": "...", "secs": S}; secs is the call's time in this process.
The first line written is {"ready": true, "version": ..., "import_s": S}. connect_many and
disconnect_many run their requests at once, one thread each, started together (Nova calls
os-brick's connectors from several threads; os-brick's own locks serialize what they
serialize); the result is the list of each request's answer, in order, and the answer is ok
only when every one is (otherwise the error kind is "partial"). attach batch
(examples/attach/batch.rs) answers the same requests, for hostbrick as a library.

Only os-brick's public API is used: connector.get_connector_properties,
InitiatorConnector.factory, connect_volume, disconnect_volume, extend_volume, and for the
encryptor ops encryptors.get_volume_encryptor(root_helper, connection_info, keymgr,
**encryption) with attach_volume(context, **encryption), detach_volume(**encryption) and
extend_volume(context, **encryption), as Nova calls them. connection_info is Nova's: the
`driver_volume_type` and the `data` with `device_path` = the connector's device path.
The key manager is a stub over a hostbrick FileKeyManager directory (DIR/<key id>: the key
as hex text): get(context, key_id) returns a 'symmetric' key whose get_encoded() is the
bytes, as castellan's Barbican manager returns Cinder's keys. The encryptor answer is
{"dev_name", "dev_path", "symlink_path", "symlink_target"} (os-brick's dm name, the device
it opened, the device_path link it repointed).
connection_properties is the `data` of Cinder's connection_info, as Nova passes it.

Privileges: the process runs as root with root_helper='' (os-brick then runs its commands
through privsep, whose default helper is `sudo privsep-helper`; the guest has no sudo).
OSBRICK_PRIVSEP=fork (default) starts os-brick's privsep daemons by forking this process
(oslo.privsep's Method.FORK: a real privsep daemon with os-brick's capabilities, no second
interpreter start-up); OSBRICK_PRIVSEP=inprocess runs the privileged functions in this process.
"""

import json
import logging
import os
import sys
import threading
import time
import traceback


def main():
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the pipe
    level = logging.DEBUG if os.environ.get("OSBRICK_DEBUG") == "1" else logging.INFO
    logging.basicConfig(
        stream=sys.stderr, level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def reply(obj):
        out.write(json.dumps(obj, sort_keys=True) + "\n")
        out.flush()

    t0 = time.monotonic()
    try:
        from oslo_concurrency import lockutils
        from oslo_config import cfg
        from oslo_privsep import priv_context

        import os_brick
        from os_brick import privileged
        from os_brick.initiator import connector

        cfg.CONF([], project="hostbrick-osbrick-driver")
        lock_path = os.environ.get("OSBRICK_LOCK_PATH", "/run/osbrick-locks")
        os.makedirs(lock_path, exist_ok=True)
        lockutils.set_defaults(lock_path)
        os_brick.setup(cfg.CONF)

        mode = os.environ.get("OSBRICK_PRIVSEP", "fork")
        contexts = [privileged.default, privileged.brick_privsep_hide_output]
        if mode == "fork":
            for ctx in contexts:
                ctx.start(priv_context.Method.FORK)
        elif mode == "inprocess":
            for ctx in contexts:
                ctx.set_client_mode(False)
        else:
            raise ValueError(f"OSBRICK_PRIVSEP={mode!r}: expected fork or inprocess")
        from importlib import metadata
        version = metadata.version("os-brick")
    except Exception as e:  # the scenario reports it
        reply({"ready": False, "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc()})
        return 1
    reply({"ready": True, "version": version, "privsep": mode,
           "import_s": round(time.monotonic() - t0, 3), "python": sys.version.split()[0]})

    connectors = {}
    connectors_lock = threading.Lock()

    def get_connector(req):
        key = (req["protocol"].upper(), bool(req.get("use_multipath", False)),
               int(req.get("device_scan_attempts", 3)))
        with connectors_lock:
            if key not in connectors:
                connectors[key] = connector.InitiatorConnector.factory(
                    key[0], root_helper="", use_multipath=key[1], device_scan_attempts=key[2])
            return connectors[key]

    def op_properties(req):
        return connector.get_connector_properties(
            root_helper="", my_ip=req["ip"], multipath=bool(req.get("multipath", False)),
            enforce_multipath=bool(req.get("enforce_multipath", False)),
            host=req.get("host"))

    def op_connect(req):
        return get_connector(req).connect_volume(req["connection_properties"])

    def op_disconnect(req):
        get_connector(req).disconnect_volume(
            req["connection_properties"], req.get("device_info"),
            force=bool(req.get("force", False)),
            ignore_errors=bool(req.get("ignore_errors", False)))
        return None

    def op_extend(req):
        return get_connector(req).extend_volume(req["connection_properties"])

    class FileKeyStub:
        """castellan's KeyManager.get over a hostbrick FileKeyManager directory."""

        class Key:
            def __init__(self, raw):
                self._raw = raw

            def managed_type(self):
                return "symmetric"

            def get_encoded(self):
                return self._raw

        def __init__(self, key_dir):
            self.key_dir = key_dir

        def get(self, context, key_id):
            import binascii
            with open(os.path.join(self.key_dir, key_id)) as f:
                return self.Key(binascii.unhexlify(f.read().strip()))

    def get_encryptor(req):
        from os_brick import encryptors
        return encryptors.get_volume_encryptor(
            root_helper="", connection_info=req["connection_info"],
            keymgr=FileKeyStub(req["key_dir"]), **req["encryption"])

    def encryptor_answer(enc):
        link = getattr(enc, "symlink_path", None)
        return {"encryptor": type(enc).__name__, "dev_name": getattr(enc, "dev_name", None),
                "dev_path": getattr(enc, "dev_path", None), "symlink_path": link,
                "symlink_target": os.readlink(link) if link and os.path.islink(link) else None}

    def op_encryptor_attach(req):
        enc = get_encryptor(req)
        enc.attach_volume(None, **req["encryption"])
        return encryptor_answer(enc)

    def op_encryptor_detach(req):
        enc = get_encryptor(req)
        enc.detach_volume(**req["encryption"])
        return encryptor_answer(enc)

    def op_encryptor_extend(req):
        enc = get_encryptor(req)
        answer = encryptor_answer(enc)
        answer["size"] = enc.extend_volume(None, **req["encryption"])
        return answer

    ops = {"properties": op_properties, "connect": op_connect, "disconnect": op_disconnect,
           "extend": op_extend, "encryptor_attach": op_encryptor_attach,
           "encryptor_detach": op_encryptor_detach, "encryptor_extend": op_encryptor_extend}

    def failed(e, start):
        answer = {"ok": False, "error": {"kind": type(e).__name__, "message": str(e)},
                  "secs": round(time.monotonic() - start, 3)}
        if e.__traceback__ is not None:
            answer["traceback"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return answer

    def call(fn, req):
        start = time.monotonic()
        try:
            result = fn(req)
            return {"ok": True, "result": result, "secs": round(time.monotonic() - start, 3)}
        except Exception as e:
            logging.exception("request %s failed", req.get("op"))
            return failed(e, start)

    def run_many(op, items):
        """Each item on its own thread, all started together; the answers in order."""
        if not isinstance(items, list):
            raise ValueError("requests is not a list")
        answers = [None] * len(items)
        good = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("op", op) == op:
                good.append(i)
            else:
                answers[i] = failed(ValueError(f"request {i} is not a {op} request"),
                                    time.monotonic())
        barrier = threading.Barrier(len(good)) if good else None

        def one(i):
            barrier.wait()
            answers[i] = call(ops[op], items[i])

        threads = []
        for i in good:
            t = threading.Thread(target=one, args=(i,), name=f"{op}-{i}")
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        return answers

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        start = time.monotonic()
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not a JSON object")
            op = req.get("op")
            if op == "quit":
                reply({"ok": True, "result": None, "secs": 0})
                break
            logging.info("request %s", op)
            if op in ("connect_many", "disconnect_many"):
                answers = run_many(op[:-len("_many")], req.get("requests"))
                bad = sum(1 for a in answers if not a["ok"])
                answer = {"ok": bad == 0, "result": answers,
                          "secs": round(time.monotonic() - start, 3)}
                if bad:
                    answer["error"] = {"kind": "partial",
                                       "message": f"{bad} of {len(answers)} requests failed"}
                reply(answer)
                continue
            fn = ops.get(op)
            if fn is None:
                raise ValueError(f"unknown op {op!r}")
            result = fn(req)
            reply({"ok": True, "result": result, "secs": round(time.monotonic() - start, 3)})
        except Exception as e:
            logging.exception("request failed")
            reply(failed(e, start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
