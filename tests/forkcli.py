"""`finetune-kit` for the tests without paying the imports each time: the command as a user types it, run in a process
forked from one that has imported torch, transformers, peft and the package once.

A short command costs 8 to 10 s on a 2-core CPU, 7 of them importing peft and transformers; the suite runs about 50.
`tests/helpers.py` puts a `finetune-kit` of its own first on the PATH of the commands it runs (`run_cli`, the README's
and the lessons' shell blocks). That `finetune-kit` (this file's `shim`, stdlib only, started with `python -S`) sends
its arguments, working folder, environment and its stdin, stdout and stderr (the file descriptors themselves) to a
*fork server* over a Unix socket; the server forks a child that takes them over, runs `finetune_kit.cli.main` as the
console script does, and exits; its exit status (or the signal that ended it) becomes the shim's. Killing the shim
kills the child and what it started (a timeout); SIGINT and SIGTERM are passed on.

What a fork cannot reproduce is whatever a library reads from the environment *at import*. So a server serves only
one environment: its socket is named after the environment minus the variables finetune_kit reads when a command
runs (`FINETUNE_KIT_*` but `FINETUNE_KIT_VERBOSE`, and the shell's own), and a command whose environment differs (its
own `HF_HOME`, say) or that asks for `--verbose` runs as a fresh process, the real console script. A server starts
in the background the second time an environment is seen (a test's one-off environment never pays for one), and
stops when its owner (the test worker) has gone or after ten idle minutes. `FINETUNE_KIT_TEST_FORK=0` runs every
command as a fresh process."""
import hashlib, json, os, signal, socket, sys, time

# read by finetune_kit when a command runs, or the shell's own: a command may differ from its server in these
OWN = ("PWD", "OLDPWD", "SHLVL", "_", "PYTEST_CURRENT_TEST", "COLUMNS", "LINES")
IDLE_SECONDS = 600


def signature(env: dict) -> str:
    "The name of the server that may run a command in environment `env`: what libraries may read at import."
    keep = {k: v for k, v in env.items()
            if k not in OWN and not (k.startswith("FINETUNE_KIT_") and k != "FINETUNE_KIT_VERBOSE")}
    return hashlib.sha256(json.dumps(sorted(keep.items())).encode()).hexdigest()[:16]


def _real(argv: list[str]):
    "Run the real console script in this process's place."
    real = os.environ["FINETUNE_KIT_FORK_REAL"]
    os.execv(real, [real, *argv])


def _start_server(folder: str, sig: str) -> None:
    "Start the server for `sig` in the background, once: the second time its environment is seen."
    seen = os.path.join(folder, f"{sig}.seen")
    if not os.path.exists(seen):
        open(seen, "w").close()
        return
    try: os.close(os.open(os.path.join(folder, f"{sig}.starting"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError: return  # started already (and still importing, or gone)
    import subprocess
    log = open(os.path.join(folder, f"{sig}.log"), "ab")
    subprocess.Popen([os.environ.get("FINETUNE_KIT_FORK_PYTHON", sys.executable), os.path.abspath(__file__), "serve",
                      os.path.join(folder, f"{sig}.sock")],
                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def shim() -> None:
    "The `finetune-kit` the tests put on the PATH: a forked run when a server for this environment is up, else the real one."
    argv, folder = sys.argv[1:], os.environ.get("FINETUNE_KIT_FORK_DIR", "")
    verbose = any(a in ("-v", "--verbose") for a in argv) or os.environ.get("FINETUNE_KIT_VERBOSE", "") not in ("", "0")
    if not folder or verbose: _real(argv)
    sig = signature(os.environ)
    conn = socket.socket(socket.AF_UNIX)
    try: conn.connect(os.path.join(folder, f"{sig}.sock"))
    except OSError:
        conn.close()
        _start_server(folder, sig)
        _real(argv)
    req = json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [len(req).to_bytes(8, "big") + req], [0, 1, 2])
    f = conn.makefile("r")
    pid = int(f.readline())
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda n, _: os.kill(pid, n))
    line = f.readline()  # the child's wait status; empty if the server died
    if not line: sys.exit(1)
    status = int(line)
    if os.WIFSIGNALED(status):
        sig_n = os.WTERMSIG(status)
        signal.signal(sig_n, signal.SIG_DFL)
        os.kill(os.getpid(), sig_n)
    sys.exit(os.waitstatus_to_exitcode(status))


def _child(listener, conn, req: dict, fds: list[int], others) -> None:
    "In the forked child: take over the shim's descriptors, folder and environment; run the command; exit with its status."
    import atexit, threading, traceback
    listener.close()
    for c in others: c.close()
    os.setsid()  # its own group, which the watcher below ends with it
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.argv = req["argv"]

    def watch():  # the shim went away (killed on a timeout): end this command and what it started
        while conn.recv(1): pass
        os.killpg(0, signal.SIGKILL)
    threading.Thread(target=watch, daemon=True).start()
    code = 1
    try:
        from finetune_kit.cli import main
        code = main()
    except SystemExit as e: code = e.code
    except BaseException: traceback.print_exc()
    finally:
        if code is None: code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        try: atexit._run_exitfuncs()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try: stream.flush()
                except Exception: pass
            os._exit(code)


def serve(path: str) -> None:
    "The fork server: import once, then fork a child per connection; answer each with its child's pid and wait status."
    owner = int(os.environ.get("FINETUNE_KIT_FORK_OWNER", "0"))
    import importlib, pkgutil
    from finetune_kit.core import quiet_libraries
    quiet_libraries()  # as `main` does before any import (a --verbose command never comes here)
    import torch, transformers, peft, datasets  # noqa: F401
    import finetune_kit
    for m in pkgutil.iter_modules(finetune_kit.__path__): importlib.import_module(f"finetune_kit.{m.name}")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + ".new")
    listener.listen(16)
    os.replace(path + ".new", path)  # appears once ready
    listener.settimeout(5)
    children, last = {}, time.time()
    try:
        while (children or time.time() - last < IDLE_SECONDS) and (not owner or _alive(owner)):
            while children and (done := os.waitpid(-1, os.WNOHANG))[0]:
                c = children.pop(done[0], None)
                if c:
                    try: c.sendall(f"{done[1]}\n".encode())
                    except OSError: pass
                    c.close()
                last = time.time()
            try: conn, _ = listener.accept()
            except socket.timeout: continue
            conn.settimeout(None)
            msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            while len(msg) < 8 or len(msg) < 8 + int.from_bytes(msg[:8], "big"): msg += conn.recv(1 << 20)
            req = json.loads(msg[8:])
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0: _child(listener, conn, req, fds, children.values())
            for fd in fds: os.close(fd)
            conn.sendall(f"{pid}\n".encode())
            children[pid] = conn
            listener.settimeout(0.2 if children else 5)
    finally:
        if os.path.exists(path): os.unlink(path)


def _alive(pid: int) -> bool:
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    return True


def install(folder: str, real: str) -> dict:
    """Write the `finetune-kit` shim into `folder`/bin and return the environment that puts it first on the PATH (the
    servers' sockets in `folder`, owned by this process)."""
    bin_dir = os.path.join(folder, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    exe = os.path.join(bin_dir, "finetune-kit")
    with open(exe, "w") as f:
        f.write(f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
                "from forkcli import shim\nshim()\n")
    os.chmod(exe, 0o755)
    return {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "FINETUNE_KIT_FORK_DIR": folder,
            "FINETUNE_KIT_FORK_REAL": real, "FINETUNE_KIT_FORK_OWNER": str(os.getpid()),
            "FINETUNE_KIT_FORK_PYTHON": sys.executable}


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]: serve(sys.argv[2])
