"""UPMC Food-101 (SPEC §3.2): the Dataset of ``food101_{train,val,test}.arrow`` and its catalogue entry.

Columns: ``image`` (bytes), ``text`` (list<string> of 1: the title), ``label`` (int64, index in
``class_idx.json``), ``image_id`` (file name), ``split`` (string); written by
:mod:`mamol.conversion.food101`.
"""
from __future__ import annotations

import json

from mamol.data.base import DatasetEntry
from mamol.data.formats import NATURAL_MODALITIES, SHIPPED_DIR
from mamol.data.natural import NaturalArrowDataset
from mamol.tasks import MULTICLASS

#: The 101 Food-101 classes in their standard (alphabetical, ``meta/classes.txt``) order. Label indices
#: come from ``class_idx.json`` instead (the MMP/DCP release's order, shipped as
#: ``datasets/food101_class_idx.json``), so that labels match Arrow files made by DCP.
FOOD101_CLASSES: tuple[str, ...] = (
    "apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad", "beignets",
    "bibimbap", "bread_pudding", "breakfast_burrito", "bruschetta", "caesar_salad", "cannoli",
    "caprese_salad", "carrot_cake", "ceviche", "cheese_plate", "cheesecake", "chicken_curry",
    "chicken_quesadilla", "chicken_wings", "chocolate_cake", "chocolate_mousse", "churros", "clam_chowder",
    "club_sandwich", "crab_cakes", "creme_brulee", "croque_madame", "cup_cakes", "deviled_eggs", "donuts",
    "dumplings", "edamame", "eggs_benedict", "escargots", "falafel", "filet_mignon", "fish_and_chips",
    "foie_gras", "french_fries", "french_onion_soup", "french_toast", "fried_calamari", "fried_rice",
    "frozen_yogurt", "garlic_bread", "gnocchi", "greek_salad", "grilled_cheese_sandwich", "grilled_salmon",
    "guacamole", "gyoza", "hamburger", "hot_and_sour_soup", "hot_dog", "huevos_rancheros", "hummus",
    "ice_cream", "lasagna", "lobster_bisque", "lobster_roll_sandwich", "macaroni_and_cheese", "macarons",
    "miso_soup", "mussels", "nachos", "omelette", "onion_rings", "oysters", "pad_thai", "paella", "pancakes",
    "panna_cotta", "peking_duck", "pho", "pizza", "pork_chop", "poutine", "prime_rib",
    "pulled_pork_sandwich", "ramen", "ravioli", "red_velvet_cake", "risotto", "samosa", "sashimi",
    "scallops", "seaweed_salad", "shrimp_and_grits", "spaghetti_bolognese", "spaghetti_carbonara",
    "spring_rolls", "steak", "strawberry_shortcake", "sushi", "tacos", "takoyaki", "tiramisu",
    "tuna_tartare", "waffles",
)

#: The shipped class index (the MMP/DCP release's order), the fallback after the raw root.
SHIPPED_FOOD101_CLASS_IDX = SHIPPED_DIR / "food101_class_idx.json"


class Food101Dataset(NaturalArrowDataset):
    """UPMC Food-101 recipe classification (101 classes, CE); split files ``food101_{train,val,test}``."""

    @classmethod
    def default_class_names(cls) -> tuple[str, ...]:
        class_idx = json.loads(SHIPPED_FOOD101_CLASS_IDX.read_text())
        return tuple(c for c, _ in sorted(class_idx.items(), key=lambda kv: kv[1]))


ENTRY = DatasetEntry(
    name="food101", kind="natural", task_type=MULTICLASS, dataset=Food101Dataset,
    split_files={"train": "train", "val": "val", "test": "test"}, modalities=NATURAL_MODALITIES,
    aliases=("food-101", "upmc_food101"), title="Food-101", class_num=101, class_doc="food classes",
    val_check_interval=0.2)
"""The catalogue entry of UPMC Food-101."""
