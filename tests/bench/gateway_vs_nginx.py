#!/usr/bin/env python3
"""GetUser through the edge gateway and through nginx (grpc_pass), same run, same machine.

What a run does:
1. issues development certificates and the token key with `dev-certs` in a fresh
   temporary directory (removed at the end);
2. starts the release `user-service` twice on embedded defaults (SQLite, in-process
   cache, `--log-filter warn`, cleared environment): one over mutual TLS with the
   dev policy (the upstream of both proxies), one in plaintext (the "direct" baseline,
   since h2load cannot present a client certificate);
3. starts the release `edge-gateway` (TLS for clients with the edge-gateway dev
   certificate, JWKS from dev-certs, rate limits out of the way) and nginx 1.22
   (`grpc_pass grpcs://` with `keepalive 64`, no per-connection request limit on either
   side, TLS 1.3 on both sides, presenting the
   same edge-gateway certificate upstream and setting the same `x-suite-subject`
   header the gateway forwards, so the user service does the same work for both);
4. creates one user through the gateway and warms every path;
5. runs h2load (Debian nghttp2-client) with one gRPC GetUser request body for every
   scenario: 4 connections x 32 streams, then 1 connection x 1 stream; for each,
   --rounds rounds of gateway then nginx (and direct; the order reversed every other
   round, so a drift in the machine's speed falls on every target alike), each a warm-up then a measured
   window; latencies come from h2load's per-request log (p50, p99 over the window);
6. records the CPU each proxy used per request, and what ran behind it (its user service,
   and for the traced targets the trace sink too), from /proc over the measured window;
7. checks on the user services' /metrics that every GetUser of each measured window
   answered OK (h2load only sees HTTP status 200, gRPC errors travel in trailers;
   calls cut off when h2load stops are not counted), reads the gateway's
   RSS during load (VmRSS sampled every 100 ms, its maximum) and prints Markdown.

`--targets gateway,gateway-traced,gateway-sampled` adds, beside the untraced gateway, a gateway
and a user service of their own exporting their spans through the OpenTelemetry SDK and
opentelemetry-otlp to otlp-sink (a counting OTLP/gRPC receiver): every span (always_on), and
the charts' default (parentbased_traceidratio at 0.1).

Targets: gateway >= 1.5x nginx's throughput at 4x32; at 1 stream the gateway's
added p50 (over direct) <= nginx's; gateway RSS under load < 30 MB; with trace export,
throughput at 4x32 >= 75% of the untraced gateway's at 100% sampling, >= 95% at 10%.
Exit 0 when every request succeeded; 1 otherwise; with --enforce, 2 when a target is missed.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
GET_USER = "/suite.user.v1.UserService/GetUser"
# The traced targets: their sampler, and the throughput they must keep against the untraced gateway.
# gateway-off (spans made, none sampled: the cost of the context on the wire and of unsampled spans)
# has no target; it shows what sampling cannot take away.
TRACED_SAMPLERS = {
    "gateway-traced": {"OTEL_TRACES_SAMPLER": "always_on"},
    "gateway-sampled": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "gateway-off": {"OTEL_TRACES_SAMPLER": "always_off"},
}
TRACED_TARGETS = {"gateway-traced": 0.75, "gateway-sampled": 0.95}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log(message):
    print(f"gateway-bench: {message}", file=sys.stderr, flush=True)


class Process:
    def __init__(self, name, argv, env=None, admin=None, stdout=None):
        self.name, self.admin = name, admin
        self.proc = subprocess.Popen(argv, env=env, stdout=stdout or sys.stderr, stderr=sys.stderr,
                                     stdin=subprocess.DEVNULL, text=stdout is not None)

    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for_port(port, process, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not process.alive():
            raise SystemExit(f"{process.name} exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{process.name} did not listen on {port} within {timeout}s")


def metrics(admin_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as response:
        return response.read().decode()


def get_user_codes(admin_port):
    """GetUser calls finished, by gRPC status code, from the server's own histogram."""
    codes = {}
    for line in metrics(admin_port).splitlines():
        if line.startswith("rpc_server_call_duration_seconds_count{") and 'rpc_method="GetUser"' in line:
            code = line.split('rpc_grpc_status_code="')[1].split('"')[0]
            codes[code] = codes.get(code, 0) + int(float(line.rsplit(" ", 1)[1]))
    return codes


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (FileNotFoundError, IndexError):
            pass
    return total


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def grpc_body(user_id):
    """One gRPC message: GetUserRequest{id} (field 1, string), length-prefixed."""
    payload = bytes([0x0A, len(user_id)]) + user_id.encode()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def grpcurl(args):
    out = subprocess.run([str(TOOLS / "grpcurl"), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"grpcurl {args} failed: {out.stderr}")
    return out.stdout


def percentile(sorted_values, quantile):
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(quantile * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def non_ok(codes_before, codes_after):
    return {code: codes_after.get(code, 0) - codes_before.get(code, 0) for code in codes_after
            if code != "0" and codes_after.get(code, 0) > codes_before.get(code, 0)}


def h2load(url, body_file, headers, connections, streams, warmup, seconds, log_file, cpu_pids, behind_pids, codes):
    argv = [
        str(TOOLS / "h2load"), url, "-c", str(connections), "-m", str(streams), "-t", "1",
        "-d", str(body_file), f"--warm-up-time={warmup}", f"--duration={seconds}", f"--log-file={log_file}",
        "-H", "content-type: application/grpc", "-H", "te: trailers",
    ]
    for header in headers:
        argv += ["-H", header]
    started = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # CPU of the proxy over the measured window only.
    time.sleep(warmup)
    cpu_before, window_start, codes_before = cpu_seconds(cpu_pids()), time.time(), codes()
    behind_before = cpu_seconds(behind_pids())
    # Calls still in flight when h2load stops are cut off (CANCELLED, or a reset request
    # body upstream); only the window before that must be all OK.
    time.sleep(max(0.0, seconds - 0.3))
    codes_in_window = non_ok(codes_before, codes())
    output, _ = proc.communicate()
    cpu_used, window = cpu_seconds(cpu_pids()) - cpu_before, time.time() - window_start
    behind_used = cpu_seconds(behind_pids()) - behind_before
    print(output, file=sys.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"h2load failed:\n{output}")
    rps = float(output.split(" req/s")[0].rsplit(",", 1)[1].strip()) if " req/s" in output else 0.0
    requests_line = next(line for line in output.splitlines() if line.startswith("requests:"))
    counts = dict(part.strip().split(" ", 1)[::-1] for part in requests_line.split(":", 1)[1].split(","))
    succeeded, failed = int(counts.get("succeeded", 0)), int(counts.get("failed", 0)) + int(counts.get("errored", 0))
    entries = []
    for line in Path(log_file).read_text().splitlines():
        start_us, status, elapsed_us = line.split("\t")[:3]
        entries.append((int(start_us) / 1e6, int(status), int(elapsed_us) / 1000.0))
    # h2load logs the warm-up too; keep requests that started in the measured window.
    measured_from = started + warmup
    latencies = sorted(ms for start, status, ms in entries if start >= measured_from and status == 200)
    return {
        "rps": rps,
        "succeeded": succeeded,
        "failed": failed,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "cpu_us": cpu_used * 1e6 / max(1, rps * window),
        "behind_cpu_us": behind_used * 1e6 / max(1, rps * window),
        "non_ok": codes_in_window,
    }


NGINX_CONF = """
worker_processes 2;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # nginx closes a client connection after 1000 requests by default; h2load does not reconnect.
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream users {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_time 1h;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {certs}/edge-gateway.pem;
        ssl_certificate_key {certs}/edge-gateway-key.pem;
        ssl_protocols TLSv1.3;
        location / {{
            grpc_pass grpcs://users;
            grpc_ssl_certificate {certs}/edge-gateway.pem;
            grpc_ssl_certificate_key {certs}/edge-gateway-key.pem;
            grpc_ssl_trusted_certificate {certs}/ca.pem;
            grpc_ssl_verify on;
            grpc_ssl_name localhost;
            grpc_ssl_protocols TLSv1.3;
            grpc_ssl_session_reuse on;
            grpc_set_header x-suite-subject "{subject}";
            grpc_set_header x-suite-roles "";
        }}
    }}
}}
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup-seconds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--enforce", action="store_true")
    parser.add_argument("--gateway-threads", type=int, help="the gateway's WORKER_THREADS (default: its own, one; 0: one per CPU)")
    parser.add_argument("--targets", default="gateway,nginx,direct",
                        help="comma separated: gateway, nginx, direct (all three for the verdict against nginx), "
                             "gateway-traced (the gateway and its upstream exporting every span to an OTLP sink), "
                             "gateway-sampled (the same at the charts' default sampling, 10%%), gateway-off (always_off: "
                             "context propagated, nothing recorded); with gateway, the throughput ratios")
    args = parser.parse_args()
    bins = Path(args.bin_dir)
    for tool in ("h2load", "nginx", "grpcurl"):
        if not (TOOLS / tool).exists():
            raise SystemExit(f"{TOOLS / tool} missing: run scripts/install-tools and scripts/install-bench-tools")

    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    processes = []
    try:
        certs = work / "certs"
        subprocess.run([str(bins / "dev-certs"), "--dir", str(certs)], check=True, stdout=sys.stderr, stderr=sys.stderr)
        clean = {"PATH": os.environ.get("PATH", "")}

        def user_service(name, extra_env, extra_args, data_of=None):
            grpc_port, admin_port = free_port(), free_port()
            # data_of: another user service's SQLite file (WAL: both read it), so both know the bench user.
            data = work / (data_of or name)
            data.mkdir(exist_ok=True)
            proc = Process(name, [str(bins / "user-service"), "serve", "--grpc-addr", f"127.0.0.1:{grpc_port}",
                                  "--admin-addr", f"127.0.0.1:{admin_port}", "--data-dir", str(data),
                                  "--log-filter", "warn", *extra_args], env={**clean, **extra_env})
            processes.append(proc)
            wait_for_port(admin_port, proc)
            return proc, grpc_port, admin_port

        upstream, upstream_port, upstream_admin = user_service("user-service-mtls", {
            "TLS_CERT": str(certs / "user-service.pem"), "TLS_KEY": str(certs / "user-service-key.pem"),
            "TLS_CA": str(certs / "ca.pem"), "AUTHZ_POLICY": str(ROOT / "config/dev/user-service.authz.toml"),
        }, [])
        direct, direct_port, direct_admin = user_service("user-service-plaintext", {}, ["--insecure-plaintext"])

        def start_gateway(name, upstream_grpc_port, extra_env):
            routes = work / f"{name}-routes.toml"
            routes.write_text(f'[[upstreams]]\nname = "user-service"\naddress = "127.0.0.1:{upstream_grpc_port}"\n'
                              f'services = ["suite.user.v1.UserService"]\n')
            port, admin_port = free_port(), free_port()
            proc = Process(name, [str(bins / "edge-gateway"), "serve", "--grpc-addr", f"127.0.0.1:{port}",
                                  "--admin-addr", f"127.0.0.1:{admin_port}", "--log-filter", "warn"], env={
                **clean,
                "TLS_CERT": str(certs / "edge-gateway.pem"), "TLS_KEY": str(certs / "edge-gateway-key.pem"),
                "TLS_CA": str(certs / "ca.pem"), "JWKS_FILE": str(certs / "jwks.json"),
                "JWT_ISSUER": "suite-dev", "JWT_AUDIENCE": "suite", "GATEWAY_ROUTES": str(routes),
                # One subject drives all the load here; its bucket and its cap on calls in
                # flight must not be what is measured.
                "RATE_LIMIT_PER_SECOND": "1000000000", "RATE_LIMIT_BURST": "1000000000",
                "MAX_IN_FLIGHT_PER_SUBJECT": "1000000",
                **({"WORKER_THREADS": str(args.gateway_threads)} if args.gateway_threads is not None else {}),
                **extra_env,
            })
            processes.append(proc)
            wait_for_port(admin_port, proc)
            return proc, port, admin_port

        gateway, gateway_port, gateway_admin = start_gateway("edge-gateway", upstream_port, {})
        # The same path with trace export on: a gateway and a user service of their own, both
        # exporting through the OpenTelemetry SDK and opentelemetry-otlp to a real OTLP/gRPC
        # receiver that counts the spans and keeps none (otlp-sink): every span
        # (gateway-traced, always_on) or the charts' default (gateway-sampled,
        # parentbased_traceidratio at 0.1).
        traced_names = [name for name in args.targets.split(",") if name in TRACED_SAMPLERS]
        sink = None
        traced = {}
        if traced_names:
            sink = Process("otlp-sink", [str(bins / "otlp-sink"), "127.0.0.1:0"], env=clean, stdout=subprocess.PIPE)
            processes.append(sink)
            sink_addr = sink.proc.stdout.readline().split()[-1]
        for name in traced_names:
            export = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink_addr}", **TRACED_SAMPLERS[name]}
            traced_upstream, traced_upstream_port, traced_upstream_admin = user_service(f"user-service-{name}", {
                "TLS_CERT": str(certs / "user-service.pem"), "TLS_KEY": str(certs / "user-service-key.pem"),
                "TLS_CA": str(certs / "ca.pem"), "AUTHZ_POLICY": str(ROOT / "config/dev/user-service.authz.toml"),
                **export,
            }, [], data_of="user-service-mtls")
            traced_gateway, traced_port, _ = start_gateway(f"edge-{name}", traced_upstream_port, export)
            traced[name] = (traced_gateway, traced_port, traced_upstream, traced_upstream_admin)
        time.sleep(1)

        def token(subject, roles=""):
            return subprocess.run([str(bins / "edge-gateway"), "dev-token", "--certs-dir", str(certs), "--subject", subject,
                                   "--roles", roles], check=True, capture_output=True, text=True).stdout.strip()

        admin = token("bench-admin", "admin")
        created = json.loads(grpcurl(["-cacert", str(certs / "ca.pem"), "-H", f"authorization: Bearer {admin}",
                                      "-d", '{"email":"bench@example.com","display_name":"Bench"}',
                                      f"localhost:{gateway_port}", "suite.user.v1.UserService/CreateUser"]))
        user_id = created["user"]["id"]
        direct_user = json.loads(grpcurl(["-plaintext", "-d", '{"email":"bench@example.com","display_name":"Bench"}',
                                          f"127.0.0.1:{direct_port}", "suite.user.v1.UserService/CreateUser"]))["user"]["id"]
        user_token = token(user_id)

        nginx_dir = work / "nginx"
        nginx_dir.mkdir()
        nginx_port = free_port()
        (nginx_dir / "nginx.conf").write_text(NGINX_CONF.format(dir=nginx_dir, upstream=upstream_port, port=nginx_port,
                                                               certs=certs, subject=user_id))
        nginx = Process("nginx", [str(TOOLS / "nginx"), "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"),
                                  "-g", "daemon off;"], env=clean)
        processes.append(nginx)
        wait_for_port(nginx_port, nginx)

        # Every path answers the benchmark's request before any load (and warms the caches).
        warm = [(port, ["-cacert", str(certs / "ca.pem"), "-H", f"authorization: Bearer {user_token}"], user_id)
                for _, port, _, _ in traced.values()]
        for port, flags, who in warm + [(gateway_port, ["-cacert", str(certs / "ca.pem"), "-H", f"authorization: Bearer {user_token}"], user_id),
                                 (nginx_port, ["-cacert", str(certs / "ca.pem")], user_id),
                                 (direct_port, ["-plaintext"], direct_user)]:
            host = f"localhost:{port}" if "-plaintext" not in flags else f"127.0.0.1:{port}"
            # From the proto files: nginx forwards reflection as the gateway's identity, which may not use it.
            grpcurl([*flags, "-import-path", str(ROOT / "proto"), "-proto", "suite/user/v1/user.proto",
                     "-d", json.dumps({"id": who}), host, "suite.user.v1.UserService/GetUser"])

        body = work / "get-user.bin"
        body.write_bytes(grpc_body(user_id))
        direct_body = work / "get-user-direct.bin"
        direct_body.write_bytes(grpc_body(direct_user))
        if os.environ.get("GATEWAY_BENCH_HOLD"):
            log(f"holding: gateway {gateway_port}, nginx {nginx_port}, direct {direct_port}, "
                f"traced {', '.join(f'{name} {t[1]}' for name, t in traced.items()) or '-'}, body {body}, token {user_token}")
            time.sleep(float(os.environ["GATEWAY_BENCH_HOLD"]))
        targets = {
            "gateway": (f"https://127.0.0.1:{gateway_port}{GET_USER}", body, [f"authorization: Bearer {user_token}"],
                        lambda: [gateway.pid()], lambda: [upstream.pid()], lambda: get_user_codes(upstream_admin)),
            "nginx": (f"https://127.0.0.1:{nginx_port}{GET_USER}", body, [], lambda: children(nginx.pid()),
                      lambda: [upstream.pid()], lambda: get_user_codes(upstream_admin)),
            "direct": (f"http://127.0.0.1:{direct_port}{GET_USER}", direct_body, [], lambda: [direct.pid()],
                       lambda: [], lambda: get_user_codes(direct_admin)),
        }
        for name, (traced_gateway, traced_port, traced_upstream, traced_upstream_admin) in traced.items():
            # Behind a traced gateway: its user service and the trace sink (a collector would run elsewhere).
            targets[name] = (f"https://127.0.0.1:{traced_port}{GET_USER}", body, [f"authorization: Bearer {user_token}"],
                             lambda g=traced_gateway: [g.pid()], lambda u=traced_upstream: [u.pid(), sink.pid()],
                             lambda admin=traced_upstream_admin: get_user_codes(admin))
        # The highest RSS of each gateway, sampled through the whole run.
        gateways = {"gateway": gateway, **{name: t[0] for name, t in traced.items()}}
        idle_rss = {name: rss_kib(proc.pid()) for name, proc in gateways.items()}
        peak_rss = dict(idle_rss)
        sampling = [True]

        def sample_rss():
            while sampling[0]:
                for name, proc in gateways.items():
                    peak_rss[name] = max(peak_rss[name], rss_kib(proc.pid()))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        results = []
        for connections, streams in ((4, 32), (1, 1)):
            for round_index in range(args.rounds):
                # Every other round runs the targets in reverse (A B, B A, ...): the machine's speed
                # drifts, and a fixed order would hand that drift to whichever target runs second.
                order = args.targets.split(",")
                for name in order if round_index % 2 == 0 else order[::-1]:
                    url, payload, headers, pids, behind, codes = targets[name]
                    log(f"{name} {connections}x{streams} round {round_index + 1}: {args.warmup_seconds}s + {args.seconds}s")
                    result = h2load(url, payload, headers, connections, streams, args.warmup_seconds, args.seconds,
                                    work / f"{name}-{connections}x{streams}-{round_index}.log", pids, behind, codes)
                    result.update(name=name, shape=f"{connections}x{streams}", round=round_index + 1)
                    results.append(result)
        sampling[0] = False
        sampler.join()

        failures = [f"{r['name']} {r['shape']} round {r['round']}: {r['failed']} failed at HTTP level" for r in results if r["failed"]]
        failures += [f"{r['name']} {r['shape']} round {r['round']}: the user service answered non-OK gRPC codes {r['non_ok']}"
                     for r in results if r["non_ok"]]
        gateway_errors = [line for line in metrics(gateway_admin).splitlines()
                          if line.startswith(("gateway_auth_failures_total", "gateway_upstream_errors_total", "gateway_rate_limited_total"))]

        def mean(name, shape, key):
            return statistics.mean(r[key] for r in results if r["name"] == name and r["shape"] == shape)

        print(f"### Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
        print(f"h2load, {args.warmup_seconds} s warm-up + {args.seconds} s measured per row, {args.rounds} rounds, "
              f"order {args.targets.replace(',', ', ')}, reversed every other round; gateway worker threads: "
              f"{'its default (1)' if args.gateway_threads is None else args.gateway_threads}; nginx worker processes: 2.\n")
        print("| target | connections x streams | round | req/s | p50 ms | p99 ms | proxy CPU µs/req | behind it CPU µs/req |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['name']} | {r['shape']} | {r['round']} | {r['rps']:,.0f} | {r['p50']:.3f} | {r['p99']:.3f} | "
                  f"{r['cpu_us']:.1f} | {r['behind_cpu_us']:.1f} |")
        names = set(args.targets.split(","))
        print()
        met = True
        if {"gateway", "nginx", "direct"} <= names:
            throughput_ratio = mean("gateway", "4x32", "rps") / max(1.0, mean("nginx", "4x32", "rps"))
            per_round = [g["rps"] / max(1.0, n["rps"]) for g, n in zip(
                [r for r in results if r["name"] == "gateway" and r["shape"] == "4x32"],
                [r for r in results if r["name"] == "nginx" and r["shape"] == "4x32"])]
            direct_p50 = mean("direct", "1x1", "p50")
            gateway_added = mean("gateway", "1x1", "p50") - direct_p50
            nginx_added = mean("nginx", "1x1", "p50") - direct_p50
            print(f"- Throughput at 4x32, gateway / nginx: **{throughput_ratio:.2f}x** "
                  f"(per round: {', '.join(f'{ratio:.2f}x' for ratio in per_round)}; target >= 1.5x)")
            print(f"- Added p50 at 1x1 over direct ({direct_p50:.3f} ms): gateway **{gateway_added:+.3f} ms**, "
                  f"nginx **{nginx_added:+.3f} ms** (target: gateway <= nginx)")
            met = throughput_ratio >= 1.5 and gateway_added <= nginx_added
        for name in traced_names:
            if "gateway" not in names:
                break
            target = TRACED_TARGETS.get(name)
            ratio = mean(name, "4x32", "rps") / max(1.0, mean("gateway", "4x32", "rps"))
            per_round = [t["rps"] / max(1.0, g["rps"]) for t, g in zip(
                [r for r in results if r["name"] == name and r["shape"] == "4x32"],
                [r for r in results if r["name"] == "gateway" and r["shape"] == "4x32"])]
            print(f"- Throughput at 4x32, {name} ({TRACED_SAMPLERS[name]['OTEL_TRACES_SAMPLER']}"
                  f"{' ' + TRACED_SAMPLERS[name]['OTEL_TRACES_SAMPLER_ARG'] if 'OTEL_TRACES_SAMPLER_ARG' in TRACED_SAMPLERS[name] else ''})"
                  f" / untraced: **{ratio:.0%}** (per round: {', '.join(f'{r:.0%}' for r in per_round)}"
                  f"{f'; target >= {target:.0%}' if target else ''})")
            met = met and (target is None or ratio >= target)
        for name in gateways:
            print(f"- {name} RSS: idle {idle_rss[name] / 1024:.1f} MB, highest under load **{peak_rss[name] / 1024:.1f} MB** "
                  f"(target < 30 MB)")
        print(f"- Gateway counters after the run: {gateway_errors if gateway_errors else 'no auth failures, rate-limit refusals or upstream errors'}")
        if sink:
            sink.proc.send_signal(signal.SIGTERM)
            print(f"- Trace sink: {sink.proc.stdout.read().strip().splitlines()[-1]}")
        if failures:
            print("\nFAILED: " + "; ".join(failures))
            return 1
        met = met and all(rss < 30 * 1024 for rss in peak_rss.values())
        if args.enforce and not met:
            log("a target was missed (--enforce)")
            return 2
        return 0
    finally:
        for proc in reversed(processes):
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
