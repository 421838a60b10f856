#!/usr/bin/env python3
"""Differential test: paliflow preprocess-image against Pillow on generated files of many formats/modes.

Usage: diff_vs_pillow.py PALIFLOW TMPDIR [--keep]
Generates images with Pillow (and hand-made BMP/PNM/GIF variants Pillow cannot write), computes the
reference the golden README defines (Image.open [+ ImageOps.exif_transpose], convert("RGB") with 16-bit
grey as v >> 8, resize((S, S), BICUBIC), (u8/255 - 0.5)/0.5 in float32) and requires bit equality.
Also checks that files Pillow refuses are refused. Exit 77 (ctest SKIP) without PIL/numpy or on a Pillow
other than 9.x/10.x (the reference semantics are Pillow 9.4's).
"""
import io
import json
import os
import struct
import subprocess
import sys

try:
    import numpy as np
    from PIL import Image, ImageDraw, ImageOps
    import PIL
except ImportError:
    print("SKIP: needs python3-pil and python3-numpy")
    sys.exit(77)
if not PIL.__version__.startswith(("9.", "10.")):
    print("SKIP: reference semantics are Pillow 9.4's, found", PIL.__version__)
    sys.exit(77)

PROG, TMP = sys.argv[1], sys.argv[2]
os.makedirs(TMP, exist_ok=True)
rng = np.random.default_rng(1234)


def base_rgb(w, h, seed=0):
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x ^ y) * 7) % 256], -1)
    a = (a + r.integers(-20, 20, a.shape)).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(a, "RGB")
    d = ImageDraw.Draw(im)
    for i in range(6):  # hard edges and thin lines, the cases resamplers get wrong
        x0, y0 = int(r.integers(0, w)), int(r.integers(0, h))
        d.rectangle([x0, y0, x0 + w // 5, y0 + h // 7], fill=tuple(int(v) for v in r.integers(0, 256, 3)))
        d.line([0, int(r.integers(0, h)), w, int(r.integers(0, h))], fill=(255, 255, 255), width=1)
    d.text((2, 2), "Receipt 42.00", fill=(0, 0, 0))
    return im


cases = []  # (filename, autorotate)


def save(im, name, **kw):
    path = os.path.join(TMP, name)
    im.save(path, **kw)
    cases.append(name)
    return path


def raw(name, data):
    with open(os.path.join(TMP, name), "wb") as f:
        f.write(data)
    cases.append(name)


# --- PNG
b = base_rgb(301, 203, 1)
save(b, "rgb.png")
save(b.convert("L"), "grey.png")
save(b.convert("1"), "bilevel.png")
save(b.convert("LA"), "grey_alpha.png")
rgba = b.copy()
rgba.putalpha(Image.fromarray((np.arange(301 * 203) % 256).reshape(203, 301).astype(np.uint8)))
save(rgba, "rgba.png")
pal = b.convert("P", palette=Image.ADAPTIVE, colors=37)
save(pal, "pal37.png")
save(pal, "pal37_trns.png", transparency=5)
save(b.convert("P", palette=Image.ADAPTIVE, colors=4), "pal4_2bit.png", bits=2)
save(b.convert("P", palette=Image.ADAPTIVE, colors=16), "pal16_4bit.png", bits=4)
g16 = Image.fromarray((np.arange(97 * 61, dtype=np.uint32).reshape(61, 97) * 11 % 65536).astype(np.uint16))
save(g16, "grey16.png")
save(base_rgb(1, 1, 2), "one.png")
save(base_rgb(2, 1, 3), "two_by_one.png")
save(base_rgb(1, 3, 4), "one_by_three.png")
save(base_rgb(3, 3, 5), "three.png")
save(base_rgb(4000, 9, 6), "wide.png")
save(base_rgb(7, 3000, 7), "tall.png")
# --- JPEG
save(b, "q75_420.jpg", quality=75)
save(b, "q95_444.jpg", quality=95, subsampling=0)
save(b, "q90_422.jpg", quality=90, subsampling=1)
save(b, "prog.jpg", quality=85, progressive=True)
save(b.convert("L"), "grey.jpg", quality=80)
save(b.convert("CMYK"), "cmyk.jpg", quality=90)
save(base_rgb(17, 9, 8), "small.jpg")
save(base_rgb(1200, 900, 9), "large.jpg", quality=88)
exif_base = base_rgb(64, 40, 10)
for o in range(1, 9):
    ex = Image.Exif()
    ex[0x0112] = o
    save(exif_base, "exif_o%d.jpg" % o, exif=ex.tobytes(), quality=92)
# --- GIF
save(pal, "pal.gif")
save(pal, "pal_trns.gif", transparency=3)
save(pal, "pal_interlaced.gif", interlace=True)
save(b.convert("L"), "grey.gif")
frames = [base_rgb(50, 30, 11).convert("P", palette=Image.ADAPTIVE), base_rgb(50, 30, 12).convert("P")]
save(frames[0], "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
save(base_rgb(2, 1, 13).convert("P"), "tiny.gif")


def first_descriptor(data):
    flags = data[10]
    i = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    while True:
        c = data[i]
        if c == 0x21:
            i += 2
            while data[i]:
                i += data[i] + 1
            i += 1
        elif c == 0x2C:
            return i
        else:
            raise ValueError("gif")


def offset_gif(src, name, sw, sh, fx, fy):
    data = bytearray(open(os.path.join(TMP, src), "rb").read())
    struct.pack_into("<HH", data, 6, sw, sh)
    i = first_descriptor(data)
    struct.pack_into("<HH", data, i + 1, fx, fy)
    raw(name, bytes(data))


offset_gif("pal.gif", "offset.gif", 330, 220, 9, 7)
offset_gif("pal_trns.gif", "offset_trns.gif", 320, 210, 4, 2)
offset_gif("pal.gif", "frame_beyond_screen.gif", 100, 100, 20, 30)  # Pillow grows the canvas
# palette smaller than the indices used (entries beyond are Pillow's grey ramp)
small_pal = Image.fromarray((np.arange(40 * 20) % 8).reshape(20, 40).astype(np.uint8), "P")
small_pal.putpalette([255, 0, 0, 0, 255, 0])
save(small_pal, "short_palette.gif")
# --- WebP
save(b, "lossy.webp", quality=80)
save(b, "lossless.webp", lossless=True)
save(rgba, "alpha.webp", quality=70)
# --- TIFF
save(b, "raw.tif")
save(b, "lzw.tif", compression="tiff_lzw")
save(b, "deflate.tif", compression="tiff_adobe_deflate")
save(b, "packbits.tif", compression="packbits")
save(b.convert("L"), "grey.tif")
save(b.convert("1"), "g4.tif", compression="group4")
save(b.convert("CMYK"), "cmyk.tif")
save(g16, "grey16.tif")
save(rgba, "rgba.tif")
save(pal, "pal.tif")
save(b, "jpeg.tif", compression="jpeg")
# --- BMP (Pillow writes 1/L/P/RGB; the rest is hand-made)
save(b, "rgb24.bmp")
save(b.convert("1"), "bilevel.bmp")
save(b.convert("L"), "grey8.bmp")
save(pal, "pal8.bmp")


def bmp(name, w, h, bits, rows, palette=b"", compression=0, masks=None, hsize=40, top_down=False):
    """rows: list of bytes, file order (bottom-up unless top_down), already padded."""
    pix = b"".join(rows)
    if hsize == 12:
        dib = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        hh = (1 << 32) - h if top_down else h
        dib = struct.pack("<IiIHHIIiiII", hsize, w, hh, 1, bits, compression, len(pix), 2835, 2835,
                          len(palette) // (3 if hsize == 12 else 4) if palette else 0, 0)
        if hsize > 40:
            m = masks or (0, 0, 0, 0)
            dib += struct.pack("<IIII", *m) + b"\0" * (hsize - 56)
    extra = struct.pack("<III", *masks[:3]) if (masks and hsize == 40) else b""
    off = 14 + len(dib) + len(extra) + len(palette)
    raw(name, b"BM" + struct.pack("<IHHI", off + len(pix), 0, 0, off) + dib + extra + palette + pix)


def padded(row):
    return row + b"\0" * ((4 - len(row) % 4) % 4)


W, H = 37, 23
idx = rng.integers(0, 16, (H, W)).astype(np.uint8)
pal16 = b"".join(bytes([int(v) for v in rng.integers(0, 256, 3)]) + b"\0" for _ in range(16))
rows4 = [padded(bytes((int(r[i]) << 4) | (int(r[i + 1]) if i + 1 < W else 0) for i in range(0, W, 2))) for r in idx[::-1]]
bmp("pal4.bmp", W, H, 4, rows4, pal16)
bmp("pal4_topdown.bmp", W, H, 4, [padded(bytes((int(r[i]) << 4) | (int(r[i + 1]) if i + 1 < W else 0)
                                               for i in range(0, W, 2))) for r in idx], pal16, top_down=True)
pal3 = b"".join(pal16[4 * i:4 * i + 3] for i in range(16))
bmp("os2_pal4.bmp", W, H, 4, rows4, pal3, hsize=12)
px16 = rng.integers(0, 65536, (H, W)).astype(np.uint16)
rows16 = [padded(r.astype("<u2").tobytes()) for r in px16[::-1]]
bmp("rgb555.bmp", W, H, 16, rows16)
bmp("rgb565_bitfields.bmp", W, H, 16, rows16, compression=3, masks=(0xF800, 0x7E0, 0x1F, 0))
bmp("rgb565_v5.bmp", W, H, 16, rows16, compression=3, masks=(0xF800, 0x7E0, 0x1F, 0), hsize=124)
px32 = rng.integers(0, 256, (H, W, 4)).astype(np.uint8)
bmp("bgrx32.bmp", W, H, 32, [r.tobytes() for r in px32[::-1]])
bmp("rgba32_v4.bmp", W, H, 32, [r.tobytes() for r in px32[::-1]], compression=3,
    masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000), hsize=108)


def rle8_rows(ix):
    out = b""
    for r in ix[::-1]:
        i = 0
        while i < len(r):
            j = i
            while j < len(r) and r[j] == r[i] and j - i < 255:
                j += 1
            out += bytes([j - i, int(r[i])])
            i = j
        out += b"\0\0"
    return out + b"\0\1"


idx8 = (rng.integers(0, 3, (H, W)) * 5).astype(np.uint8)
idx8[5:9, 3:30] = 7
pal256 = b"".join(bytes([int(v) for v in rng.integers(0, 256, 3)]) + b"\0" for _ in range(256))
bmp("rle8.bmp", W, H, 8, [rle8_rows(idx8)], pal256, compression=1)
# --- PNM
ppm = b.crop((0, 0, 120, 80))
save(ppm, "rgb.ppm")
save(ppm.convert("L"), "grey.pgm")
save(ppm.convert("1"), "bits.pbm")
a = np.array(ppm)
raw("p6_maxval1000.ppm", b"P6\n# comment\n120 80\n1000\n" + (a.astype(np.uint32) * 1000 // 255).astype(">u2").tobytes())
raw("p6_maxval15.ppm", b"P6 120 80 15\n" + (a // 17).astype(np.uint8).tobytes())
raw("p5_65535.pgm", b"P5\n120 80\n65535\n" + (a[:, :, 0].astype(np.uint32) * 257 + 3).astype(">u2").tobytes())
raw("p5_4000.pgm", b"P5\n120 80\n4000\n" + (a[:, :, 1].astype(np.uint32) * 4000 // 255).astype(">u2").tobytes())
raw("p3_plain.ppm", b"P3\n4 2\n# c\n255\n" + b" ".join(str(int(v)).encode() for v in a[:2, :4].ravel()) + b"\n")
raw("p2_plain.pgm", b"P2 3 2 100\n0 50 100\n25 75 99\n")
raw("p1_plain.pbm", b"P1\n5 3\n10101\n0 1 0 1 0\n11111\n")
# EXIF orientation in other containers: PNG eXIf, WebP EXIF chunk, the TIFF Orientation tag
ex6 = Image.Exif()
ex6[0x0112] = 6
save(exif_base, "exif_o6.png", exif=ex6.tobytes())
ex3 = Image.Exif()
ex3[0x0112] = 3
save(exif_base, "exif_o3.webp", exif=ex3.tobytes(), lossless=True)
save(exif_base, "orient_o8.tif", tiffinfo={274: 8})  # Pillow applies a TIFF's orientation on load
save(exif_base, "orient_o6_lzw.tif", tiffinfo={274: 6}, compression="tiff_lzw")
save(exif_base, "orient_o2.tif", tiffinfo={274: 2})
# harmless libjpeg warning (stray bytes before a marker): Pillow decodes it, so must we
jq = open(os.path.join(TMP, "q75_420.jpg"), "rb").read()
k = jq.index(b"\xff\xc4")
raw("stray_bytes.jpg", jq[:k] + b"\x00\x00\x00" + jq[k:])
# autorotate variants: exif_o*.jpg and the other containers again with --autorotate
rot_cases = ["exif_o%d.jpg" % o for o in range(1, 9)] + ["exif_o6.png", "exif_o3.webp", "orient_o8.tif",
                                                          "orient_o6_lzw.tif", "orient_o2.tif"]

# files Pillow refuses that we must refuse too (one line each, no tensor)
refuse = {}


def bad(name, data):
    raw(name, data)
    cases.remove(name)
    refuse[name] = True


jp = open(os.path.join(TMP, "q75_420.jpg"), "rb").read()
bad("trunc_third.jpg", jp[: len(jp) // 3])
pn = open(os.path.join(TMP, "rgb.png"), "rb").read()
bad("trunc.png", pn[: len(pn) * 2 // 3])
gf = open(os.path.join(TMP, "pal.gif"), "rb").read()
bad("trunc.gif", gf[: len(gf) // 2])
bm = open(os.path.join(TMP, "rgb24.bmp"), "rb").read()
bad("trunc.bmp", bm[: len(bm) - 500])
bad("trunc.ppm", open(os.path.join(TMP, "rgb.ppm"), "rb").read()[:-10])
bad("p2_too_big.pgm", b"P2 2 1 10\n5 11\n")
bad("not_image.png", b"hello world\n" * 10)
bad("no_eoi.jpg", jp[:-2])  # Pillow: "image file is truncated"


def flip_chunk_crc(data, ctype):
    o = 8
    while o < len(data):
        n = struct.unpack(">I", data[o:o + 4])[0]
        if data[o + 4:o + 8] == ctype:
            e = bytearray(data)
            e[o + 8 + n] ^= 0xFF
            return bytes(e)
        o += 12 + n
    raise ValueError(ctype)


info_png = os.path.join(TMP, "text_chunk.png")
from PIL import PngImagePlugin
pi = PngImagePlugin.PngInfo()
pi.add_text("comment", "hello")
b.save(info_png, pnginfo=pi)
bad("bad_text_crc.png", flip_chunk_crc(open(info_png, "rb").read(), b"tEXt"))  # Pillow checks pre-IDAT CRCs


# --- reference
LUT = ((np.arange(256, dtype=np.float32) / np.float32(255)) - np.float32(0.5)) / np.float32(0.5)


def reference(name, S, autorotate):
    im = Image.open(os.path.join(TMP, name))
    if autorotate:
        im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):
        im = Image.fromarray((np.array(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8), "L")
    if im.mode != "RGB":
        im = im.convert("RGB")
    u8 = np.array(im.resize((S, S), Image.BICUBIC))
    return LUT[u8].transpose(2, 0, 1)


def read_st(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(data[8 + n + s:8 + n + e], np.float32).reshape(v["shape"])
    return out


failures = 0
import warnings
warnings.simplefilter("ignore")
for S, names, autorotate in [(224, cases, False), (97, cases, False), (448, cases, False), (224, rot_cases, True)]:
    out = os.path.join(TMP, "out_%d_%d.safetensors" % (S, autorotate))
    args = [PROG, "preprocess-image", "--size", str(S), "--out", out] + (["--autorotate"] if autorotate else [])
    files = list(names) + (sorted(refuse) if not autorotate else [])
    r = subprocess.run(args + files, cwd=TMP, capture_output=True, text=True)
    got = read_st(out)
    want_rc = 1 if not autorotate else 0
    if r.returncode != want_rc:
        print("FAIL: exit status %d, want %d\n%s" % (r.returncode, want_rc, r.stderr))
        failures += 1
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    for name in (sorted(refuse) if not autorotate else []):
        hits = [l for l in lines if name in l]
        if len(hits) != 1 or name in got:
            print("FAIL: %s should be refused with one stderr line (got %d lines, tensor %s)" %
                  (name, len(hits), name in got))
            failures += 1
    for name in names:
        if name not in got:
            print("FAIL: S=%d %s: no tensor; stderr: %s" % (S, name, [l for l in lines if name in l]))
            failures += 1
            continue
        want = reference(name, S, autorotate)
        d = np.abs(got[name] - want) * 127.5
        if d.max() > 0:
            print("FAIL: S=%d autorotate=%d %s: max %.1f mean %.4f levels" % (S, autorotate, name, d.max(), d.mean()))
            failures += 1
    extra = set(got) - set(names)
    if extra:
        print("FAIL: unexpected tensors", sorted(extra))
        failures += 1
    print("S=%d autorotate=%d: %d files compared, %d refused files checked" %
          (S, autorotate, len(names), 0 if autorotate else len(refuse)))
print("failures:", failures)
sys.exit(1 if failures else 0)
