"""The ``improv-capture`` command line: serve, bot, verify, recover, fetch, export (README.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from improv_capture.settings import Settings

#: ``export`` prints at most this many names of rewritten (or removed) files; export.json
#: lists every file.
EXPORT_LISTED_FILES = 50


def private_files(data_dir: Path) -> None:
    """Performers' faces and voices, tokens and keys: readable by the server's user only.
    Every file and directory this process (and the workers it starts) creates is 0600/0700,
    and the data dir itself is 0700 even if it existed before, so older files inside it are
    out of reach as well."""
    os.umask(0o077)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)


def _banner(settings: Settings, operator_token: str, routing: bool) -> str:
    """The console URL; the token only on a terminal, never into a log (docker logs, journald)."""
    spread = f" (rooms spread over {settings.workers} worker processes)" if routing else ""
    lines = [f"improv-capture: serving on {settings.base_url}{spread}",
             f"improv-capture: console {settings.base_url}/console"]
    if sys.stdout.isatty():
        lines.append(f"improv-capture: sign in with {settings.base_url}/console#token={operator_token}")
    elif settings.operator_token:
        lines.append("improv-capture: the operator token is the one set in IMPROV_OPERATOR_TOKEN")
    else:
        lines.append(f"improv-capture: the operator token is in {settings.data_dir / 'operator_token'}")
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from improv_capture.api.http_guard import guard
    from improv_capture.api.http_server import server_config, tls_files
    from improv_capture.api.upload_paths import UploadBodies
    from improv_capture.observability.logs import configure_logging

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("data_dir", args.data_dir), ("workers", args.workers),
                                   ("tls_cert", args.tls_cert), ("tls_key", args.tls_key))
                 if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # one line per setting that cannot work, no traceback
        raise SystemExit("\n".join(
            f"improv-capture: {'IMPROV_' + str(e['loc'][0]).upper() + ': ' if e['loc'] else ''}"
            f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
    tls_files(settings)  # a certificate that cannot work stops the start here, said plainly
    if settings.s3_url:  # the store's credentials too, before any process starts
        from improv_capture.storage.s3_client import StoreConfigError, credentials

        try:
            credentials()
        except StoreConfigError as exc:
            raise SystemExit(f"improv-capture: {exc}") from None
    private_files(settings.data_dir)
    routing = settings.workers > 1 and settings.worker_index is None
    configure_logging(settings)  # text or JSON lines (IMPROV_LOG_FORMAT)
    if routing:  # the router loads no aiortc: it only passes requests and socket frames
        from improv_capture.cluster.router import create_router_app

        app = create_router_app(settings)
    else:
        from improv_capture.api.app import create_app

        app = create_app(settings)
    operator_token = app.state.operator_token
    if settings.worker_index is not None:
        print(f"improv-capture: worker {settings.worker_index} on {settings.host}:{settings.port}",
              flush=True)
    else:
        print(_banner(settings, operator_token, routing), flush=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied request is noise
    uploads = UploadBodies(app.state.signer, settings)  # performers' bodies: their own uploads
    nodes = getattr(app.state, "nodes", None)  # one of several: its pages may follow rooms out
    guarded = guard(app, operator_token, settings, uploads,
                    nodes.other_urls if nodes is not None else None)
    uvicorn.Server(server_config(guarded, settings)).run()
    return 0


def _bot(args: argparse.Namespace) -> int:
    from improv_capture.tools.bot.client import run_bot
    from improv_capture.tools.bot.studio import StudioOptions, parse_size

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s bot %(levelname)s %(message)s")
    pause = (args.pause_at, args.pause_for) if args.pause_for else None
    try:
        hq_size = parse_size(args.hq_size) if args.hq_size else None
    except ValueError as exc:
        print(f"improv-capture bot: --hq-size: {exc}", file=sys.stderr)
        return 2
    pace = args.studio_pace_kbps
    if pace not in (None, "auto"):
        try:
            pace = float(pace)
        except ValueError:
            print("improv-capture bot: --studio-pace-kbps: a number or auto", file=sys.stderr)
            return 2
    studio = StudioOptions(hq_size=hq_size, pace_kbps=pace,
                           upload_timeout_s=args.hq_upload_timeout,
                           max_pending_bytes=int(args.hq_max_pending_mb * 2**20),
                           record=not args.no_hq, grain=args.hq_grain)
    return asyncio.run(run_bot(args.invite, args.duration, args.report, pause, args.preencoded,
                               studio, args.turn_transport, args.voice, args.leak_gain,
                               args.follow))


def _verify(args: argparse.Namespace) -> int:
    from improv_capture.recorder.verify import format_report, verify_session

    if not (args.session_dir / "manifest.json").exists():
        print(f"improv-capture verify: {args.session_dir} has no manifest.json", file=sys.stderr)
        return 2
    report = verify_session(args.session_dir)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def _recover(args: argparse.Namespace) -> int:
    from improv_capture.recorder.recover import recover_sessions

    data_dir = args.data_dir or Settings().data_dir
    if data_dir.is_dir():
        private_files(data_dir)
    recovered = recover_sessions(data_dir / "sessions")
    for manifest in recovered:
        print(f"{manifest['session_id']}: {manifest['state']} ({manifest.get('reason')})")
    if not recovered:
        print("no interrupted sessions")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    import httpx

    from improv_capture.tools.fetch import FetchError, Mirror

    mirror = Mirror(args.server, args.token, args.dest, include_partial=args.include_partial,
                    progress=None if args.quiet else sys.stderr)
    try:
        return mirror.run()
    except (FetchError, httpx.HTTPError) as exc:
        print(f"improv-capture fetch: {exc}", file=sys.stderr)
        return 2


def _export(args: argparse.Namespace) -> int:
    from improv_capture.recorder.export import ExportError
    from improv_capture.recorder.export.run import Options, default_progress, parse_skip_flagged, run_export

    formats = tuple(f.strip() for value in args.format for f in value.split(",") if f.strip())
    bound = {"shard_max_mb": args.shard_max_mb} if args.shard_max_mb is not None else {}
    options = Options(formats=formats, copy=args.copy, skip_flagged=parse_skip_flagged(args.skip_flagged),
                      display_names=args.display_names, vad=not args.no_vad, **bound)
    try:
        report = run_export(args.src, args.dest, options, default_progress(args.quiet, args.progress))
    except (ExportError, OSError) as exc:  # OSError: DEST not writable, disk full
        print(f"export: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for note in report.notes:
            print(f"note: {note}")
        print(f"export: {report.sessions} session(s), {report.takes} take(s), {report.samples} "
              f"sample(s) ({report.left_out} left out, {report.flagged} flagged) in {args.dest}")
        for what, names in (("rewritten", report.changes.rewritten), ("removed", report.changes.removed)):
            shown = names[:EXPORT_LISTED_FILES]
            more = f" ... and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
            print(f"{what}: {len(names)}" + "".join(f"\n  {n}" for n in shown) + more)
        print(f"unchanged: {report.changes.unchanged}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="improv-capture")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="listen address (IMPROV_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (IMPROV_PORT, default 8000)")
    serve.add_argument("--data-dir", type=Path, help="data directory (IMPROV_DATA_DIR)")
    serve.add_argument("--workers", type=int,
                       help="processes that carry rooms, one core each (IMPROV_WORKERS, default 1)")
    serve.add_argument("--tls-cert", type=Path, metavar="PEM",
                       help="serve HTTPS with this certificate chain, e.g. Let's Encrypt's "
                            "fullchain.pem (IMPROV_TLS_CERT; needs --tls-key)")
    serve.add_argument("--tls-key", type=Path, metavar="PEM",
                       help="the certificate's unencrypted private key, e.g. privkey.pem "
                            "(IMPROV_TLS_KEY)")
    serve.set_defaults(func=_serve)

    bot = commands.add_parser("bot", help="a headless performer with a synthetic flash/beep")
    bot.add_argument("--invite", required=True, help="invite URL")
    bot.add_argument("--duration", type=float, default=10.0, help="seconds to stay joined (SIGTERM leaves at once, report written)")
    bot.add_argument("--report", type=Path, help="write a JSON report here")
    bot.add_argument("--pause-at", type=float, default=0.0, help="stop sending media after S s")
    bot.add_argument("--pause-for", type=float, default=0.0, help="... for S s, then resume")
    bot.add_argument("--follow", action="store_true",
                     help="when the socket is lost, join again as a page does: the invite's "
                          "node, where a `moved` message says, or another node the welcome named")
    bot.add_argument("--preencoded", action="store_true",
                     help="loop media encoded once (a cheap bot for load tests; with "
                          "--voice or --leak-gain, the video only)")
    bot.add_argument("--hq-size", metavar="WxH",
                     help="studio rooms: size of the local full-quality recording "
                          "(default: the room profile's capture size, e.g. 1280x720)")
    bot.add_argument("--studio-pace-kbps", metavar="N|auto",
                     help="studio rooms: upload the local recording at most N kbit/s while "
                          "the take runs, or `auto`: as the page does, as fast as the call "
                          "stays healthy (default: unpaced; after the stop: unpaced)")
    bot.add_argument("--hq-upload-timeout", type=float, default=60.0, metavar="S",
                     help="studio rooms: keep uploading at most S s after the take stops")
    bot.add_argument("--hq-max-pending-mb", type=float, default=256.0, metavar="MB",
                     help="studio rooms: unacknowledged recording held in memory; past it "
                          "the local recording stops (the live copy remains)")
    bot.add_argument("--hq-grain", type=int, default=0, metavar="N",
                     help="studio rooms: noise of +-N luma levels on the local recording, so "
                          "it is as costly to encode and send as a real camera's (load tests)")
    bot.add_argument("--no-hq", action="store_true",
                     help="studio rooms: send the scaled-down live call only, no local copy "
                          "(the benchmark's baseline)")
    bot.add_argument("--turn-transport", choices=("udp", "tcp", "tls"),
                     help="use the welcome's TURN URL over this transport (aiortc uses one "
                          "TURN URL; default: the first listed). tls verifies the TURN "
                          "server's certificate against the system's CAs (or SSL_CERT_FILE)")
    bot.add_argument("--voice", type=int, metavar="SEED",
                     help="send a speech-like sound (bursts and pauses from SEED, on the wall "
                          "clock) instead of the beeps; the report's sent.speech lists its "
                          "intervals (tools/bot/voice.py; not for studio rooms)")
    bot.add_argument("--leak-gain", type=float, default=0.0, metavar="G",
                     help="mix the audio received from the others into what the bot sends, "
                          "times G, a frame or more later (a loudspeaker heard by the "
                          "microphone: cross-talk)")
    bot.set_defaults(func=_bot)

    verify = commands.add_parser("verify", help="check a session archive")
    verify.add_argument("session_dir", type=Path)
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.set_defaults(func=_verify)

    recover = commands.add_parser("recover", help="finalise sessions interrupted by a crash")
    recover.add_argument("--data-dir", type=Path, help="data directory (IMPROV_DATA_DIR)")
    recover.set_defaults(func=_recover)

    fetch = commands.add_parser("fetch", help="mirror finished sessions, verified, resumable")
    fetch.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    fetch.add_argument("--token", required=True, help="a reader token (or the operator token)")
    fetch.add_argument("--dest", required=True, type=Path, help="mirror directory")
    fetch.add_argument("--include-partial", action="store_true", help="also mirror partial sessions")
    fetch.add_argument("--quiet", action="store_true", help="no progress output")
    fetch.set_defaults(func=_fetch)

    export = commands.add_parser("export", help="cut sessions into takes, in dataset formats (docs/export.md)")
    export.add_argument("src", type=Path, help="a session directory, a data dir or a fetch mirror")
    export.add_argument("--dest", required=True, type=Path, help="output directory")
    export.add_argument("--format", action="append", required=True, metavar="FMT",
                        help="lhotse, hf, webdataset or rttm (repeat, or FMT,FMT)")
    export.add_argument("--copy", default="auto", metavar="auto|hq|live",
                        help="which copy of a studio performer (default auto: the high-quality "
                             "copy where it covers the take, the live copy elsewhere)")
    export.add_argument("--skip-flagged", metavar="FLAG[,FLAG]|all",
                        help="leave out samples with any of these quality flags")
    export.add_argument("--display-names", action="store_true",
                        help="include performers' display names (default: pseudonymous ids only)")
    export.add_argument("--shard-max-mb", type=float, metavar="N",
                        help="webdataset: bound of a shard, default 1 GiB (a larger sample gets its own)")
    export.add_argument("--no-vad", action="store_true", help="no speech turns (and no cross-talk check)")
    export.add_argument("--progress", action="store_true", help="progress on stderr even when not a terminal")
    export.add_argument("--quiet", action="store_true", help="no progress, no summary")
    export.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
