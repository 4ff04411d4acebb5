#!/usr/bin/env python3
# podagent: the one process a podwall lab runs inside each pod (and node) network namespace.
# Owns: that netns's listening sockets (TCP accept, UDP echo, raw SCTP INIT watch) and the probes the
# prober asks for as JSON lines on stdin, answered on stdout. May not: change network configuration,
# or outlive its parent: it exits when stdin closes, so a crashed prober leaves no orphans.
# Stdlib only, Python >= 3.8: it is shipped as-is next to the compiled TypeScript.
"""Protocol (one JSON object per line).

stdin:  {"id": 1, "op": "tcp"|"udp", "ip": "10.0.0.2", "port": 80, "timeoutMs": 800}
        {"id": 2, "op": "sctp", "ip": "fd00::2", "port": 7000, "tag": 12345}   (send one INIT)
        {"id": 3, "op": "ping"}
stdout: {"ev": "ready", "pid": 42, "errors": [{"proto": "TCP", "port": 80, "errno": "EADDRINUSE", ...}]}
        {"id": 1, "ok": true} | {"id": 1, "ok": false, "err": "timeout"}
        {"ev": "sctp", "tag": 12345, "port": 7000, "src": "10.0.0.1"}   (INIT seen for a served port)
"""

import argparse
import asyncio
import errno
import json
import os
import random
import socket
import struct
import sys
import threading

IPPROTO_SCTP = 132


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def sctp_init(sport, dport, tag):
    """A minimal SCTP packet: common header (verification tag 0, as INIT requires) + INIT chunk whose
    initiate tag is the probe token. The checksum is CRC32c, stored little-endian like the kernel does."""
    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, tag, 65535, 10, 10, random.getrandbits(32))
    unsummed = struct.pack("!HHII", sport, dport, 0, 0) + chunk
    return unsummed[:8] + struct.pack("<I", crc32c(unsummed)) + chunk


def family_of(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def err_name(e):
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


class Agent:
    def __init__(self, loop, serve, ips):
        self.loop = loop
        self.serve = serve
        self.ips = ips
        self.sctp_ports = {port for proto, port in serve if proto == "SCTP"}
        self.raw = {}
        self.errors = []
        self.servers = []

    def emit(self, obj):
        try:
            sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
            sys.stdout.flush()
        except OSError:
            os._exit(0)  # the prober is gone

    # ---- serving

    async def start(self):
        for proto, port in self.serve:
            if proto == "TCP":
                await self._serve_tcp(port)
            elif proto == "UDP":
                for ip in self.ips or ["::"]:
                    self._serve_udp(ip, port)
        # Raw SCTP sockets both send probes and watch for INITs; every agent opens them.
        for fam in (socket.AF_INET, socket.AF_INET6):
            try:
                s = socket.socket(fam, socket.SOCK_RAW, IPPROTO_SCTP)
                s.setblocking(False)
                self.raw[fam] = s
                self.loop.add_reader(s.fileno(), self._on_raw, s, fam)
            except OSError as e:
                self.errors.append({"proto": "SCTP", "port": 0, "family": int(fam), "errno": err_name(e)})

    async def _serve_tcp(self, port):
        # One dual-stack listener: accepts v4 (as mapped addresses) and v6 on every pod IP.
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", port))
            s.listen(4096)
            s.setblocking(False)
            self.servers.append(await asyncio.start_server(self._on_tcp, sock=s))
        except OSError as e:
            s.close()
            self.errors.append({"proto": "TCP", "port": port, "errno": err_name(e), "msg": str(e)})

    async def _on_tcp(self, reader, writer):
        # The handshake already proved reachability; nothing to say.
        writer.close()

    def _serve_udp(self, ip, port):
        # One socket per pod IP, so the echo leaves from the address the prober sent to (a connected
        # UDP client drops replies from any other source).
        fam = socket.AF_INET6 if ip == "::" else family_of(ip)
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            if ip == "::":
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((ip, port))
            s.setblocking(False)
            self.loop.add_reader(s.fileno(), self._on_udp, s)
        except OSError as e:
            s.close()
            self.errors.append({"proto": "UDP", "port": port, "ip": ip, "errno": err_name(e), "msg": str(e)})

    @staticmethod
    def _drain(s):
        """Yields every datagram waiting on a non-blocking socket, then returns."""
        while True:
            try:
                yield s.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # a queued ICMP error from an earlier send; keep draining

    def _on_udp(self, s):
        for data, addr in self._drain(s):
            try:
                s.sendto(data, addr)
            except OSError:
                pass

    def _on_raw(self, s, fam):
        for data, addr in self._drain(s):
            if fam == socket.AF_INET:  # v4 raw sockets see the IP header, v6 ones do not
                if len(data) < 20:
                    continue
                data = data[(data[0] & 0x0F) * 4 :]
            if len(data) < 32 or data[12] != 1:  # common header + INIT chunk header + tag
                continue
            dport = struct.unpack_from("!H", data, 2)[0]
            if dport not in self.sctp_ports:
                continue
            tag = struct.unpack_from("!I", data, 16)[0]
            self.emit({"ev": "sctp", "tag": tag, "port": dport, "src": addr[0]})

    # ---- probing

    def handle_line(self, line):
        try:
            req = json.loads(line)
        except ValueError:
            self.emit({"ev": "error", "err": "bad json"})
            return
        self.loop.create_task(self._handle(req))

    async def _handle(self, req):
        rid = req.get("id")
        op = req.get("op")
        try:
            if op == "ping":
                ok, err = True, None
            elif op == "tcp":
                ok, err = await self.probe_tcp(req["ip"], int(req["port"]), req.get("timeoutMs", 800) / 1000)
            elif op == "udp":
                ok, err = await self.probe_udp(req["ip"], int(req["port"]), req.get("timeoutMs", 800) / 1000)
            elif op == "sctp":
                ok, err = self.send_sctp(req["ip"], int(req["port"]), int(req["tag"]))
            else:
                ok, err = False, "unknown op"
        except Exception as e:  # a bad request must not kill the agent
            ok, err = False, err_name(e)
        out = {"id": rid, "ok": ok}
        if err:
            out["err"] = err
        self.emit(out)

    async def probe_tcp(self, ip, port, timeout):
        s = socket.socket(family_of(ip), socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            await asyncio.wait_for(self.loop.sock_connect(s, (ip, port)), timeout)
            return True, None
        except (OSError, asyncio.TimeoutError) as e:
            return False, err_name(e)
        finally:
            s.close()

    async def probe_udp(self, ip, port, timeout):
        s = socket.socket(family_of(ip), socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.connect((ip, port))
            token = os.urandom(16)
            deadline = self.loop.time() + timeout
            # A second copy halfway through covers a datagram lost to a verdict program that was
            # still starting; a denied destination stays silent either way.
            resend_at = self.loop.time() + timeout / 2
            s.send(token)
            while True:
                now = self.loop.time()
                if now >= deadline:
                    return False, "timeout"
                wait = min(deadline, resend_at) - now if resend_at else deadline - now
                try:
                    data = await asyncio.wait_for(self.loop.sock_recv(s, 2048), max(wait, 0.001))
                except asyncio.TimeoutError:
                    if resend_at:
                        resend_at = None
                        s.send(token)
                    continue
                if data == token:
                    return True, None
        except OSError as e:  # ECONNREFUSED: ICMP port unreachable (closed port or REJECT)
            return False, err_name(e)
        finally:
            s.close()

    def send_sctp(self, ip, port, tag):
        fam = family_of(ip)
        s = self.raw.get(fam)
        if s is None:
            return False, "no raw socket"
        pkt = sctp_init(random.randint(1024, 65535), port, tag)
        try:
            s.sendto(pkt, (ip, 0))
            return True, None
        except OSError as e:
            return False, err_name(e)


def parse_serve(text):
    out = []
    for item in filter(None, (text or "").split(",")):
        proto, port = item.split(":")
        out.append((proto.upper(), int(port)))
    return out


def main():
    ap = argparse.ArgumentParser(description="podwall lab pod agent (JSON lines on stdin/stdout)")
    ap.add_argument("--serve", default="", help="comma list of PROTO:PORT, e.g. TCP:80,UDP:53,SCTP:7000")
    ap.add_argument("--ips", default="", help="comma list of this pod's IPs (UDP echo binds each)")
    args = ap.parse_args()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    agent = Agent(loop, parse_serve(args.serve), [ip for ip in args.ips.split(",") if ip])
    loop.run_until_complete(agent.start())

    def read_stdin():
        for line in sys.stdin.buffer:
            if line.strip():
                loop.call_soon_threadsafe(agent.handle_line, line)
        os._exit(0)  # parent closed stdin (or died): leave no orphan

    threading.Thread(target=read_stdin, daemon=True).start()
    agent.emit({"ev": "ready", "pid": os.getpid(), "errors": agent.errors})
    loop.run_forever()


if __name__ == "__main__":
    main()
