"""A real ComfyUI server in a subprocess (``main.py --cpu`` on 127.0.0.1, a free port) and a tiny
HTTP client for /prompt, /history, /object_info and the output images.

Used by the integration tests and by `make demo` (toy/demo.py) when COMFYUI_PATH is set; it never imports ComfyUI
(the server runs in ComfyUI's own interpreter, COMFYUI_PYTHON)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyHost:
    def __init__(self, comfy: Path, python: str, base: Path, yaml: Path):
        self.comfy, self.base, self.port = comfy, base, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--extra-model-paths-config", str(yaml), "--output-directory", str(base / "output"),
               "--input-directory", str(base / "input"), "--temp-directory", str(base / "temp"),
               "--disable-auto-launch"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=comfy, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log:\n{self.log()[-3000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer in {timeout}s; log:\n{self.log()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- HTTP ---------------------------------------------------------------------------------------
    def get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=60) as r:
            return json.load(r)

    def post(self, route: str, body: dict):
        req = urllib.request.Request(self.url + route, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                data = r.read()
                return r.status, json.loads(data) if data.strip() else {}
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def run(self, prompt: dict, timeout=300) -> dict:
        """POST an API graph and wait for it: -> the /history entry (status, outputs, messages)."""
        code, body = self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
        if code != 200:
            raise RuntimeError(f"/prompt rejected the graph ({code}): {json.dumps(body)[:2000]}")
        pid = body["prompt_id"]
        end = time.time() + timeout
        while time.time() < end:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                if hist[pid]["status"].get("status_str") in ("success", "error"):
                    return hist[pid]
            time.sleep(0.05)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout}s")

    def run_and_interrupt(self, prompt: dict, after: float, timeout: float = 120) -> tuple[dict, float]:
        """Queue ``prompt``, POST /interrupt ``after`` seconds into its run -> (its /history entry, seconds
        from the interrupt to the prompt's end)."""
        code, body = self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
        if code != 200:
            raise RuntimeError(f"/prompt rejected the graph ({code}): {json.dumps(body)[:2000]}")
        pid, end = body["prompt_id"], time.time() + timeout
        while not self.get("/queue")["queue_running"] and time.time() < end:
            time.sleep(0.05)
        time.sleep(after)
        start = time.time()
        self.post("/interrupt", {})
        while pid not in self.get(f"/history/{pid}"):
            if time.time() > end:
                raise TimeoutError(f"prompt {pid} did not end within {timeout}s (interrupted {time.time() - start:.0f}s ago)")
            time.sleep(0.05)
        return self.get(f"/history/{pid}")[pid], time.time() - start

    def run_ok(self, prompt: dict, timeout=300) -> dict:
        entry = self.run(prompt, timeout)
        if entry["status"]["status_str"] != "success":
            raise RuntimeError(f"prompt failed: {error_of(entry)}")
        return entry

    def images(self, entry: dict, node: str | None = None) -> list[np.ndarray]:
        """The PNGs a prompt's output nodes wrote, as uint8 arrays (H, W, 3)."""
        out = []
        for nid, data in entry["outputs"].items():
            if node is not None and nid != node:
                continue
            for im in data.get("images", []):
                kind = "temp/temp" if im["type"] == "temp" else im["type"]  # ComfyUI nests temp/ in --temp-directory
                folder = self.base / kind / im.get("subfolder", "")
                out.append(np.asarray(Image.open(folder / im["filename"]).convert("RGB")))
        return out


    def latents(self, entry: dict) -> list:
        """The tensors SaveLatent nodes wrote (raw latents, as VAEDecode consumes them)."""
        from safetensors.torch import load_file

        return [load_file(str(self.base / "output" / f.get("subfolder", "") / f["filename"]))["latent_tensor"]
                for data in entry["outputs"].values() for f in data.get("latents", [])]


def error_of(entry: dict) -> dict:
    """The execution_error message of a failed prompt (exception_message, exception_type, node_type)."""
    for event, data in entry["status"].get("messages", []):
        if event == "execution_error":
            return data
    return {}
