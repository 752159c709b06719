"""A stand-in for `vllm serve` in the serving tests: answers /health and /metrics on the port it is given
(argv after --port), like the real server's process group it starts a child, and says "Address already in
use" when the port is taken, as vLLM's server does."""

import subprocess
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

METRICS = (
    'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1.0\n'
    'vllm:kv_cache_usage_perc{engine="0"} 0.25\n'
)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/health": b"", "/metrics": METRICS.encode()}.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[sys.argv.index("--port") + 1])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # an "engine core"
    print(f"child {child.pid}", flush=True)
    try:
        server = HTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        print(f"ERROR: [Errno 98] {exc}: Address already in use", flush=True)
        child.kill()
        sys.exit(1)
    server.serve_forever()
