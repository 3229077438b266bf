"""Render the application icon's PNG sizes and copy the runtime assets into the package.

Desktops want raster icons at fixed sizes and no SVG renderer other than Qt's is
installed here, so the PNGs come from ``QSvgRenderer`` painting onto a ``QImage``.
Run it after editing ``resources/icons/app/merge-studio.svg``::

    QT_QPA_PLATFORM=offscreen .venv/bin/python resources/render_icons.py
    QT_QPA_PLATFORM=offscreen .venv/bin/python resources/render_icons.py --sheet /tmp/icons.png

It writes ``resources/icons/app/merge-studio-<N>.png`` for every size in ``SIZES``
and refreshes ``merge_studio/gui/assets/app.svg`` and ``app.png`` (what the window
loads through ``importlib.resources``). ``--sheet`` also draws every toolbar icon
on a light and a dark strip, to check the set looks consistent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QByteArray, QRectF, Qt  # noqa: E402
from PySide6.QtGui import QColor, QFont, QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP_SVG = ROOT / "resources" / "icons" / "app" / "merge-studio.svg"
ASSETS = ROOT / "merge_studio" / "gui" / "assets"
SIZES = (16, 32, 48, 64, 128, 256, 512)
RUNTIME_PNG_SIZE = 256


def render_svg(svg: bytes, size: int) -> QImage:
    """Paint an SVG onto a transparent square image of ``size`` pixels."""
    renderer = QSvgRenderer(QByteArray(svg))
    if not renderer.isValid():
        raise ValueError("the SVG could not be parsed by Qt")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return image


def render_app_icon(out_dir: Path = APP_SVG.parent) -> list[Path]:
    """Write the PNG sizes next to the SVG and refresh the packaged copies."""
    svg = APP_SVG.read_bytes()
    written = []
    for size in SIZES:
        path = out_dir / f"merge-studio-{size}.png"
        if not render_svg(svg, size).save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        written.append(path)
    shutil.copyfile(APP_SVG, ASSETS / "app.svg")
    shutil.copyfile(out_dir / f"merge-studio-{RUNTIME_PNG_SIZE}.png", ASSETS / "app.png")
    return written


def contact_sheet(out: Path, cell: int = 48) -> Path:
    """Every toolbar icon at ``cell`` pixels, on a light strip and (recoloured) on a dark one."""
    sys.path.insert(0, str(ROOT))
    from merge_studio.gui.resources import icon_names, icon_svg

    names = icon_names()
    pad, label_h = 16, 16
    width = pad + len(names) * (cell + pad)
    strip = cell + label_h + 2 * pad
    image = QImage(width, 2 * strip, QImage.Format.Format_ARGB32_Premultiplied)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setFont(QFont("DejaVu Sans", 6))
    for row, (background, dark) in enumerate(((QColor("#f6f7f9"), False), (QColor("#22272e"), True))):
        top = row * strip
        painter.fillRect(0, top, width, strip, background)
        for i, name in enumerate(names):
            x = pad + i * (cell + pad)
            renderer = QSvgRenderer(QByteArray(icon_svg(name, dark=dark)))
            renderer.render(painter, QRectF(x, top + pad, cell, cell))
            painter.setPen(QColor("#8a96a3"))
            painter.drawText(QRectF(x - pad / 2, top + pad + cell + 2, cell + pad, label_h),
                             Qt.AlignmentFlag.AlignCenter, name)
    painter.end()
    image.save(str(out), "PNG")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sheet", type=Path, help="also write a contact sheet of the toolbar icons here")
    args = parser.parse_args(argv)
    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841  (fonts need one)
    for path in render_app_icon():
        print(f"wrote {path.relative_to(ROOT)}")
    if args.sheet:
        print(f"wrote {contact_sheet(args.sheet)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
