#!/usr/bin/env python3
"""Build tiny stand-in libraries for the NVIDIA CUDA shared libraries that the
PyPI build of torch links against, so a CPU-only vLLM runs without the ~2.2 GB
(download) / ~4 GB (installed) of nvidia-* wheels.

The PyPI `torch` wheel for Linux is the CUDA build: even libtorch_cpu.so has
DT_NEEDED entries for libcudart.so.13 and libcupti.so.13, and libtorch_python.so
needs libcudnn/libnccl/libcufile. On a machine without a GPU none of those
libraries is ever *used* (vLLM's CPU platform never touches CUDA), they only
have to be *loadable*. This script scans the installed site-packages, finds
every missing CUDA soname and the symbols the torch-family libraries import
from it (with their ELF symbol versions), and compiles one stub library per
soname into site-packages/nvidia/cu13/lib (a directory that is already in
torch's RPATH). Every stub function returns cudaErrorNoDevice (100), so torch
sees "no CUDA device", exactly as on any GPU-less host; *ErrorString / *Name
style functions return a static string.

Needs: cc (gcc/clang) and readelf (binutils), both present wherever a C
compiler is. Usage: python cuda_stubs.py SITE_PACKAGES
"""

import os
import re
import subprocess
import sys
import tempfile

# soname prefix -> symbol-name prefixes used to attribute *unversioned* imports
UNVERSIONED_PREFIXES = {
    "libnccl.so": ("nccl",),
    "libcufile.so": ("cuFile",),
    "libcusparseLt.so": ("cusparseLt",),
    "libcurand.so": ("curand",),
    "libnvshmem_host.so": ("nvshmem", "nvshmemx"),
    "libcusolver.so": ("cusolver",),
    "libcupti.so": ("cupti", "CUPTI"),
    "libnvrtc.so": ("nvrtc",),
    "libcufft.so": ("cufft",),
    "libcudnn.so": ("cudnn",),
    "libcublasLt.so": ("cublasLt",),
    "libcublas.so": ("cublas",),
    "libcusparse.so": ("cusparse",),
    "libcudart.so": ("cuda", "__cuda"),
    "libnvJitLink.so": ("nvJitLink",),
    "libnvToolsExt.so": ("nvtx",),
}
CUDA_SONAME = re.compile(
    r"^lib(cuda|cudart|cublas|cublasLt|cudnn|cufft|cufile|cupti|curand|cusolver|"
    r"cusparse|cusparseLt|nccl|nvrtc|nvshmem_host|nvJitLink|nvToolsExt)\.so\.\d+$"
)
# libcuda.so.1 is the *driver*; it is only needed by libcaffe2_nvrtc.so, which torch
# dlopen()s lazily when a CUDA kernel is JIT-compiled. Never stub the driver.
NEVER_STUB = {"libcuda.so.1"}
STRING_FUNCS = re.compile(r"(ErrorString|ErrorName|StatusString|StatusName|GetString)$")


def readelf(args, path):
    return subprocess.run(
        ["readelf", "-W", *args, path], capture_output=True, text=True, check=False
    ).stdout


def elf_files(root):
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if ".so" not in f:
                continue
            p = os.path.join(dirpath, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                if fh.read(4) != b"\x7fELF":
                    continue
            yield p


def main():
    site = os.path.abspath(sys.argv[1])
    outdir = os.path.join(site, "nvidia", "cu13", "lib")
    available = set()  # sonames shipped somewhere in site-packages
    needed = {}  # soname -> set of importing files
    imports = []  # (file, [(name, version, type)])
    for p in elf_files(site):
        available.add(os.path.basename(p))
        dyn = readelf(["-d"], p)
        sonames = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
        cuda = [s for s in sonames if CUDA_SONAME.match(s) and s not in NEVER_STUB]
        if not cuda:
            continue
        for s in cuda:
            needed.setdefault(s, set()).add(p)
        # version-need table: version name -> soname (e.g. NVSHMEM -> libnvshmem_host.so.3)
        vermap, cur = {}, None
        for line in readelf(["-V"], p).splitlines():
            m = re.search(r"File: (\S+)", line)
            if m:
                cur = m.group(1)
                continue
            m = re.search(r"Name: (\S+)", line)
            if m and cur:
                vermap[m.group(1)] = cur
        syms = []
        for line in readelf(["--dyn-syms"], p).splitlines():
            f = line.split()
            if len(f) >= 8 and f[6] == "UND" and f[7] != "":
                name, _, ver = f[7].partition("@")
                ver = ver.split(" ")[0]
                syms.append((name, ver, vermap.get(ver, ""), f[3]))
        imports.append((p, cuda, syms))

    missing = sorted(s for s in needed if s not in available)
    if not missing:
        print("cuda_stubs: nothing to do (all CUDA sonames present)")
        return
    # soname -> {symbol: (type, version-node or "")}
    table = {s: {} for s in missing}
    for _p, cuda, syms in imports:
        for name, ver, ver_soname, typ in syms:
            if ver_soname in table:
                table[ver_soname][name] = (typ, ver)
            elif not ver:
                # attribute by the longest matching prefix (cusparseLt before cusparse)
                best, best_len = None, 0
                for s in cuda:
                    base = s.rsplit(".so", 1)[0] + ".so"
                    for px in UNVERSIONED_PREFIXES.get(base, ()):
                        if name.startswith(px) and len(px) > best_len:
                            best, best_len = s, len(px)
                if best in table:
                    table[best].setdefault(name, (typ, ""))
    os.makedirs(outdir, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        for soname in missing:
            syms = table[soname]
            lines = [
                "/* generated by tools/vllm/cuda_stubs.py: CUDA-less stand-in */",
                'static const char stub_msg[] = "CUDA is not available (CPU-only stub library)";',
            ]
            for name in sorted(syms):
                typ = syms[name][0]
                if typ == "OBJECT":
                    lines.append(f"char {name}[256] = {{0}};")
                elif typ == "TLS":
                    lines.append(f"__thread char {name}[64];")
                elif STRING_FUNCS.search(name):
                    lines.append(f"const char *{name}(void) {{ return stub_msg; }}")
                else:
                    lines.append(f"long {name}(void) {{ return 100; }}")
            src = os.path.join(tmp, soname + ".c")
            with open(src, "w") as fh:
                fh.write("\n".join(lines) + "\n")
            cmd = [cc, "-shared", "-fPIC", "-O0", "-w", "-o", os.path.join(outdir, soname),
                   f"-Wl,-soname,{soname}", src]
            nodes = sorted({v for _t, v in syms.values() if v})
            if nodes:
                # one version node per version name; unversioned symbols go to the first
                vs = os.path.join(tmp, soname + ".map")
                with open(vs, "w") as fh:
                    for i, node in enumerate(nodes):
                        fh.write(node + " {\n  global:\n")
                        for name in sorted(syms):
                            v = syms[name][1]
                            if v == node or (not v and i == 0):
                                fh.write(f"    {name};\n")
                        fh.write("  local: *;\n" if i == len(nodes) - 1 else "")
                        fh.write("};\n")
                cmd.append(f"-Wl,--version-script={vs}")
            subprocess.run(cmd, check=True)
            print(f"cuda_stubs: {soname}: {len(syms)} symbols, version nodes {nodes or '-'}")


if __name__ == "__main__":
    main()
