"""mkdocs hook: the committed figures (figures/*.png, outside docs/) become pages' images at figures/NAME.png.

One copy of each figure lives in the repository, beside its JSON; the documentation links to it as if it were
under docs/, so a link to a figure that does not exist is a broken link of the strict build.
"""
from pathlib import Path

from mkdocs.structure.files import File

FIGURES = Path(__file__).resolve().parents[2] / "figures"


def on_files(files, config):
    for png in sorted(FIGURES.glob("*.png")):
        files.append(File(f"figures/{png.name}", str(FIGURES.parent), config["site_dir"],
                          config["use_directory_urls"]))
    return files
