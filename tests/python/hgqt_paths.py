"""Where the tests find the repository, the build directory and the hgqt binary."""
import os
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


def build_dir():
    """HGQT_BUILD_DIR (relative to the repository), default build/."""
    build = pathlib.Path(os.environ.get("HGQT_BUILD_DIR", "build"))
    return build if build.is_absolute() else REPO / build


HGQT = build_dir() / "hgqt"


def run_hgqt(*args, env=None, timeout=300):
    """Runs the hgqt binary with `args` (and extra environment variables); output as text."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(HGQT), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
