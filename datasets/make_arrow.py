"""Convert raw datasets to Arrow files: the user-facing script of ``python -m mamol.convert``.

    python datasets/make_arrow.py --dataset houston2013 --root data_2013 --target ARROW_ROOT
    cd datasets && python make_arrow.py      # converts each of data_2013/, data_trento/, data_augsburg/ here
    python datasets/make_arrow.py --dataset mmimdb --root RAW_MMIMDB --target ARROW_ROOT

``--help`` lists every option (see :mod:`mamol.convert`).
"""
import sys

from mamol.convert import main

if __name__ == "__main__":
    sys.exit(main())
