"""The Speech-02 HTTP server: MiniMax- and OpenAI-compatible routes over the trained checkpoints.

python serve.py                          # configs/entry/serve.yaml: the main job's checkpoints, port 8000
python serve.py auth=false port=8080     # no auth (local use)
SPEECH_API_KEYS=k1,k2 python serve.py host=0.0.0.0 device=cuda

Routes, config keys and curl examples: docs/serving.md. Ctrl-C stops accepting requests and lets the ones in
flight finish.
"""

from __future__ import annotations

import hydra
import torch
import uvicorn
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from speech.lit.resolvers import register_resolvers
from speech.serve.app import create_app
from speech.serve.server import build_server


@hydra.main(version_base="1.3", config_path="configs", config_name="entry/serve")
def main(cfg: DictConfig) -> None:
    threads = cfg.get("threads")  # checked first: it needs nothing resolved
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise SystemExit(f"threads: must be an integer >= 1 or null (torch's default), got {threads!r}")
        torch.set_num_threads(threads)
    register_resolvers()  # the default models: ${main_job:...}
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as err:  # e.g. no main job yet: say what, without a traceback
        raise SystemExit(f"serve.py: {err}") from None
    if config["device"] == "auto":
        config["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    server = build_server(config)
    print(f"serving {server.models} on http://{cfg.host}:{cfg.port} (auth {'on' if server.auth else 'off'})")
    app = create_app(server)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=60)


if __name__ == "__main__":
    main()
