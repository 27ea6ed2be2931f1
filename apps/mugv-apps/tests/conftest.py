"""Fixtures of the apps' tests: tiny real checkpoints, and headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A randomly initialised tiny MUGDiT and VAE saved as `save_pretrained` folders.

    Real models at toy width: enough to exercise loading, sampling, decoding and writing.
    """
    from mugv.dit import MUGDiT, dit_config
    from mugv.infra import single_process
    from mugv.vae import CONFIGS, VideoVAE

    root = tmp_path_factory.mktemp("ckpt")
    vae = VideoVAE(CONFIGS["tiny"])
    vae.save_pretrained(root / "vae")
    with single_process(seed=0):
        dit = MUGDiT(dit_config("tiny", in_channels=vae.latent_channels, depth=1))
        dit.save_pretrained(root / "dit")
    return root / "dit", root / "vae"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, installed here with apt-get when missing (as root)."""
    path = _chromium()
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env, capture_output=True
        )
        path = _chromium()
    if path is None:
        pytest.fail("headless Chromium is needed: `apt-get install chromium` (as root)")
    return path


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
