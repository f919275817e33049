"""``avlops rollout ...``: the local platform (up, down) and canary rollouts of registry versions (start, resume,
status, promote, abort, history)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from avlops.cli import ExitCode
from avlops.config import ConfigError

__all__ = ["register"]

DEFAULT_WORKDIR = Path("artifacts/rollout")
DEFAULT_SPEC = Path("configs/rollout/default.yaml")

_HELP = """\
Progressive delivery of registry versions on the local platform: `up` starts a Pushgateway, the champion on a
Triton server behind Envoy (one address for gRPC and HTTP) and a Prometheus scraping them, all on 127.0.0.1 and
detached; `start VERSION` (or --alias challenger) serves the version as a canary and steps it through the rollout
spec (configs/rollout/default.yaml): traffic weights, pauses and Prometheus analyses, then promotes it (champion
alias moves, old stable drained and stopped) or aborts it (canary weight 0, stopped, version marked failed).
State is in WORKDIR/rollout/state.json: `status` works from any shell, `resume` continues a controller that was
stopped. `promote` continues a paused rollout (--full skips the remaining steps), `abort` stops it.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "rollout",
        help="canary rollouts of registry versions behind Envoy, analysed in Prometheus",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 done (start: promoted), 1 aborted, 2 bad usage or spec, 3 missing input.",
    )
    rsub = r.add_subparsers(dest="rollout_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = rsub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"platform folder ({DEFAULT_WORKDIR})")
        return p

    up = add("up", "start the platform on the champion (or --version / --alias)")
    up.add_argument("--repository", type=Path, default=Path("artifacts/registry"), help="registry folder")
    which = up.add_mutually_exclusive_group()
    which.add_argument("--version", type=int)
    which.add_argument("--alias", default=None)
    up.add_argument("--port", type=int, default=0, help="Envoy's port for clients (default: a free one)")
    up.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        help="Envoy refuses larger requests (default: the version's max_media_bytes + 64 KiB)",
    )
    up.set_defaults(handler=_up)

    add("down", "stop every process of the platform").set_defaults(handler=_down)

    start = add("start", "roll a version out as a canary (runs the controller until it decides)")
    target = start.add_mutually_exclusive_group(required=True)
    target.add_argument("version", nargs="?", help="registry version (N or vN)")
    target.add_argument("--alias", help="the version of this alias (e.g. challenger)")
    start.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help=f"rollout spec ({DEFAULT_SPEC})")
    start.add_argument("--golden", type=Path, help="manifest whose test-split captions the quality probe sends")
    start.add_argument("--detach", action="store_true", help="run the controller in the background and return")
    start.set_defaults(handler=_start)

    resume = add("resume", "run the controller of the current rollout again (after it was stopped)")
    resume.add_argument("--golden", type=Path, help="as for start")
    resume.add_argument("--detach", action="store_true")
    resume.set_defaults(handler=_resume)

    status = add("status", "the current (or last) rollout: step, weights, analysis runs and their values")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)

    promote = add("promote", "continue a paused rollout (--full: promote now, skipping remaining steps)")
    promote.add_argument("--full", action="store_true")
    promote.set_defaults(handler=_promote)

    add("abort", "abort the current rollout: canary weight 0, canary stopped, version marked failed").set_defaults(
        handler=_abort
    )
    render = rsub.add_parser(
        "render",
        help="write the Kubernetes kustomize tree (Argo Rollout, AnalysisTemplates, monitoring, KServe) for a version",
    )
    render.add_argument("--out", type=Path, required=True, help="folder to write (base/, overlays/cpu|gpu, kserve/)")
    render.add_argument("--version", type=int, required=True, help="the version to roll out")
    render.add_argument("--stable-version", type=int, required=True, help="the version serving now")
    render.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    render.add_argument("--canary-percent", type=int, default=20, help="KServe's canaryTrafficPercent")
    render.set_defaults(handler=_render)

    history = add("history", "past rollouts and how they ended")
    history.add_argument("--json", action="store_true")
    history.set_defaults(handler=_history)


def _up(args: argparse.Namespace) -> int:
    from avlops.registry.store import CHAMPION, Registry, RegistryError
    from avlops.rollout.platform import PlatformError, up

    try:
        version = Registry(args.repository).resolve(args.version or args.alias or CHAMPION)
        platform = up(
            args.workdir, args.repository, version, envoy_port=args.port, max_request_bytes=args.max_request_bytes
        )
    except (RegistryError, PlatformError) as err:
        print(f"avlops rollout up: {err}", file=sys.stderr)
        return ExitCode.INPUT
    print(f"serving version {version} at {platform.address} (gRPC and HTTP) through Envoy")
    print(f"requests over {platform.max_request_bytes} bytes are refused at Envoy")
    print(f"Prometheus {platform.prometheus_url}  Pushgateway {platform.pushgateway_url}  folder {platform.workdir}")
    return ExitCode.OK


def _down(args: argparse.Namespace) -> int:
    from avlops.rollout.platform import down

    down(args.workdir)
    print(f"stopped the platform in {args.workdir}")
    return ExitCode.OK


def _controller(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from avlops.rollout.controller import Controller

    hooks = []
    golden = getattr(args, "golden", None)
    if golden is not None:
        from avlops.monitoring.probe import GoldenProbe

        hooks.append(GoldenProbe.from_manifest(golden).hook())
    return Controller(args.workdir, hooks=hooks)


def _drive(args: argparse.Namespace) -> int:
    from avlops.rollout.controller import RolloutPhase, dump

    if args.detach:
        from avlops.rollout.controller import run_detached

        run_detached(args.workdir, getattr(args, "golden", None))
        print(f"controller running in the background; avlops rollout status --workdir {args.workdir}")
        return ExitCode.OK
    state = _controller(args).run()
    print(dump(state))
    return ExitCode.OK if state.phase == RolloutPhase.PROMOTED else ExitCode.FAILED


def _start(args: argparse.Namespace) -> int:
    from avlops.rollout.controller import Controller, RolloutError
    from avlops.rollout.platform import PlatformError
    from avlops.rollout.spec import load_rollout

    try:
        spec = load_rollout(args.spec)
    except ConfigError as err:
        print(f"avlops rollout start: nothing started: {err}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        controller = Controller(args.workdir)
        state = controller.begin(args.version or args.alias, spec, str(args.spec))
    except (RolloutError, PlatformError) as err:
        print(f"avlops rollout start: nothing started: {err}", file=sys.stderr)
        return ExitCode.FAILED
    print(f"rollout {state.id}: version {state.version} over stable {state.stable_version}")
    return _drive(args)


def _resume(args: argparse.Namespace) -> int:
    from avlops.rollout.controller import RolloutError

    try:
        return _drive(args)
    except RolloutError as err:
        print(f"avlops rollout resume: {err}", file=sys.stderr)
        return ExitCode.FAILED


def _current(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from avlops.rollout.controller import Controller

    controller = Controller(args.workdir)
    return controller, controller.state()


def _status(args: argparse.Namespace) -> int:
    from avlops.rollout.controller import TERMINAL, state_summary
    from avlops.rollout.platform import PlatformError

    try:
        controller, state = _current(args)
    except PlatformError as err:
        print(f"avlops rollout status: {err}", file=sys.stderr)
        return ExitCode.INPUT
    if state is None:
        print("no rollout yet")
        return ExitCode.OK
    summary = state_summary(state)
    summary["controller_pid"] = controller.controller_running()
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return ExitCode.OK
    print(f"rollout {summary['id']}: {summary['phase']}, version {state.version} over {state.stable_version}")
    print(f"  step {summary['step']}, weights canary {state.weight} % / stable {100 - state.weight} %")
    if state.pause_reason:
        print(f"  paused: {state.pause_reason}")
    if state.reasons:
        print(f"  reasons: {'; '.join(state.reasons)}")
    for run in summary["analysis"]:
        print(f"  step {run['step']} analysis {run['template']}: {run['phase']}")
        for name, m in run["metrics"].items():
            values = ", ".join("/".join(f"{v:.4g}" for v in vs) or "-" for vs in m["values"])
            print(f"    {name}: {m['phase']} [{values}]")
    pid = summary["controller_pid"]
    if pid:
        print(f"  controller running (pid {pid})")
    elif state.phase not in TERMINAL:
        print("  controller not running (avlops rollout resume)")
    for line in summary["events"]:
        print(f"  {line}")
    return ExitCode.OK


def _ask(args: argparse.Namespace, what: str) -> int:
    from avlops.rollout.controller import TERMINAL

    controller, state = _current(args)
    if state is None or state.phase in TERMINAL:
        print(f"avlops rollout {what}: no rollout in progress", file=sys.stderr)
        return ExitCode.FAILED
    controller.request(what)
    if controller.controller_running():
        print(f"asked the controller to {what}; avlops rollout status shows when it did")
        return ExitCode.OK
    if what == "abort":  # no controller: do it here
        with controller.lock():
            current = controller.state()
            assert current is not None
            controller.tick(current)
        print("aborted")
        return ExitCode.OK
    args.detach, args.golden = True, None
    print("no controller was running: starting one in the background")
    return _drive(args)


def _promote(args: argparse.Namespace) -> int:
    return _ask(args, "promote-full" if args.full else "promote")


def _abort(args: argparse.Namespace) -> int:
    return _ask(args, "abort")


def _history(args: argparse.Namespace) -> int:
    from avlops.rollout.controller import state_summary

    controller, _ = _current(args)
    states = controller.history()
    if args.json:
        print(json.dumps([state_summary(s) for s in states], indent=1, default=str))
        return ExitCode.OK
    for s in states:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.started))
        took = f"{(s.finished or s.started) - s.started:.0f} s"
        why = f": {'; '.join(s.reasons)}" if s.reasons else ""
        print(f"{when}  {s.id}  version {s.version} over {s.stable_version}  {s.phase.value} after {took}{why}")
    if not states:
        print("no rollout finished yet")
    return ExitCode.OK


def _render(args: argparse.Namespace) -> int:
    from avlops.monitoring.prometheus import rules_dir
    from avlops.rollout.kubernetes import render_tree
    from avlops.rollout.spec import load_rollout

    spec = load_rollout(args.spec)
    folders = render_tree(
        args.out,
        spec,
        rules_dir(),
        version=args.version,
        stable_version=args.stable_version,
        canary_percent=args.canary_percent,
    )
    for folder in folders:
        print(f"kubectl kustomize {folder}")
    return ExitCode.OK
