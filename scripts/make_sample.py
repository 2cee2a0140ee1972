"""Writes the small sample set shipped in the package (run once; the TSVs are committed).

    .venv/bin/python scripts/make_sample.py      # rewrites hlm_engine/sample_data/*.tsv

A data builder, not part of the installed package (only the TSVs it writes ship).

Everything here is written for the project (invented brand names, made-up products); nothing is copied
from the real Home Depot data. The files have the real data's columns, so code and demos that read
`$HLM_DATA_DIR` also run on this set:
    products.tsv            product_id, title            (~360 ad-like home-improvement titles)
    queries_{train,dev}.tsv query_id, query              (100 / 50 shopper-style queries, some with typos)
    qrels_{train,dev}.tsv   query_id, product_id, relevance   (graded 1..3, mean-of-raters style values)
    unlabeled_queries.tsv   source, query                (~300: the labelled queries + extra shop queries
                                                          + how-to questions, like the real query log)
How the grades come about: each query is built from one product's attributes (so at least one exact
match exists); a product of the same category scores 3 when it has every attribute the query names,
about 2 when it has some, about 1.67 when none, and a product of a related category about 1.
Deterministic: one seeded `random.Random`, no dependence on dict/set hashing.
"""
from __future__ import annotations

import csv
import os
import random

from hlm_engine.io import atomic_path

SEED = 20240611
HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hlm_engine", "sample_data")

BRANDS = ["Northfield", "Ridgecraft", "Ironvale", "Bluestem", "Harbor Oak", "Kestrel", "Summitline",
          "Copperleaf", "Maplecrest", "TerraForge", "Pinegate", "BrightHaven", "Stonebrook", "Aquavera",
          "Voltmark", "Glenmoor", "Cascadia Home", "Redwing Works", "Larkspur", "Everwell", "Granite Peak",
          "Silverbirch", "ProBuild Select", "Tidewater", "Oakhurst"]
MODELS = ["Aldridge", "Benton", "Calloway", "Darby", "Ellison", "Fairhaven", "Greer", "Hollis", "Ivers",
          "Jasper", "Kingsley", "Linden", "Marlow", "Norwood", "Ostend", "Prescott", "Quarry", "Rowan",
          "Sutton", "Thorne", "Upton", "Vale", "Westbury", "Yardley"]

# A value is a title form, or (title form, query form) when shoppers write it differently.
# Each category: title template, attribute pools, query templates (the attributes a query names are the
# ones in its braces), and related categories (judged at relevance ~1).
CATEGORIES: dict[str, dict] = {
    "paint": dict(
        title="{brand} {line} {size} {color} {finish} {place} Paint and Primer in One",
        attrs=dict(line=["Ultra Cover", "Everlast", "True Tone"],
                   size=[("1 gal.", "1 gallon"), ("5 gal.", "5 gallon"), ("1 qt.", "quart")],
                   color=["Swiss Coffee", "Polar White", "Harbor Gray", "Sage Green", "Midnight Navy", "Warm Taupe"],
                   finish=["Flat", "Eggshell", "Satin", "Semi-Gloss"], place=["Interior", "Exterior"]),
        queries=["{place} paint {finish}", "{color} paint", "{brand} {finish} paint", "{size} {place} paint",
                 "{color} {finish}"],
        related=["caulk"]),
    "kitchen_faucet": dict(
        title="{brand} {model} {handle} {kind} Kitchen Faucet in {finish}",
        attrs=dict(handle=["Single-Handle", "Two-Handle"],
                   kind=[("Pull-Down Sprayer", "pull down"), ("Pull-Out Sprayer", "pull out"),
                         ("Standard", "standard")],
                   finish=["Chrome", "Brushed Nickel", "Matte Black", "Stainless Steel", "Oil-Rubbed Bronze"]),
        queries=["{finish} kitchen faucet", "{kind} kitchen faucet", "{brand} kitchen faucet",
                 "kitchen sink faucet {finish} {kind}"],
        related=["bath_faucet", "shower_head"]),
    "bath_faucet": dict(
        title="{brand} {model} {spread} {handle} Bathroom Faucet in {finish}",
        attrs=dict(spread=[("4 in. Centerset", "centerset"), ("8 in. Widespread", "widespread"),
                           ("Single Hole", "single hole")],
                   handle=["Single-Handle", "2-Handle"],
                   finish=["Chrome", "Brushed Nickel", "Matte Black", "Oil-Rubbed Bronze"]),
        queries=["bathroom faucet {finish}", "{spread} bathroom faucet", "{brand} bath faucet {finish}",
                 "{spread} lavatory faucet"],
        related=["kitchen_faucet", "vanity"]),
    "shower_head": dict(
        title="{brand} {sprays}-Spray {dia} in. {kind} Shower Head in {finish}",
        attrs=dict(sprays=["1", "3", "5", "6"], dia=["4.5", "6", "8", "10"],
                   kind=[("Fixed", "fixed"), ("Handheld", "handheld"), ("Rain", "rain")],
                   finish=["Chrome", "Brushed Nickel", "Matte Black"]),
        queries=["{kind} shower head", "{finish} {kind} shower head", "{dia} inch rain shower head",
                 "{kind} showerhead {finish}"],
        related=["bath_faucet"]),
    "led_bulb": dict(
        title="{brand} {watt}-Watt Equivalent {shape} Dimmable LED Light Bulb {tone} ({pack}-Pack)",
        attrs=dict(watt=["40", "60", "75", "100"], shape=["A19", "BR30", "PAR38", "B11"],
                   tone=["Soft White", "Daylight", "Bright White"], pack=["2", "4", "6", "12"]),
        queries=["{watt}w led bulb", "{shape} led {tone}", "led light bulbs {tone}", "{watt} watt {shape} bulb",
                 "{brand} led bulbs"],
        related=["ceiling_fan"]),
    "ceiling_fan": dict(
        title="{brand} {model} {size} in. LED Indoor {finish} Ceiling Fan with Light Kit and Remote",
        attrs=dict(size=["44", "52", "60"], finish=["Brushed Nickel", "Matte Black", "White", "Bronze"]),
        queries=["{size} inch ceiling fan", "{finish} ceiling fan with light", "ceiling fan with remote",
                 "{brand} {model} fan"],
        related=["led_bulb"]),
    "drill": dict(
        title="{brand} {volt}-Volt Lithium-Ion Cordless {tool} Kit with Battery and Charger",
        attrs=dict(volt=["12", "18", "20"],
                   tool=[("1/2 in. Drill/Driver", "drill"), ("1/2 in. Hammer Drill", "hammer drill"),
                         ("1/4 in. Impact Driver", "impact driver"), ("3/8 in. Drill/Driver", "3/8 drill")]),
        queries=["{volt}v cordless drill", "{brand} {tool}", "cordless {tool}", "{volt} volt {tool}"],
        related=["screws"]),
    "screws": dict(
        title="{brand} #{gauge} x {length} in. {head} {material} {use} Screws ({count}-Pack)",
        attrs=dict(gauge=["6", "8", "10"], length=["1-1/4", "1-5/8", "2-1/2", "3"],
                   head=["Phillips Bugle-Head", "Star Flat-Head", "Square Pan-Head"],
                   material=[("Zinc-Plated Steel", "zinc"), ("Stainless Steel", "stainless"),
                             ("Exterior Coated", "coated")],
                   use=["Wood", "Deck", "Drywall"], count=["50", "100", "350"]),
        queries=["{length} {use} screws", "{material} {use} screws", "#{gauge} {use} screws",
                 "{length} inch {material} screws"],
        related=["drill", "lumber"]),
    "lumber": dict(
        title="{dim} x {length} ft. {species} {kind}",
        attrs=dict(dim=[("2 in. x 4 in.", "2x4"), ("2 in. x 6 in.", "2x6"), ("1 in. x 6 in.", "1x6"),
                        ("4 in. x 4 in.", "4x4")],
                   length=["8", "10", "12"],
                   species=[("Premium Kiln-Dried Whitewood", "whitewood"), ("Douglas Fir", "douglas fir"),
                            ("Pressure-Treated Pine", "pressure treated"), ("Western Red Cedar", "cedar")],
                   kind=["Stud", "Board", "Post"]),
        queries=["{dim}x{length}", "{species} {dim}", "{species} {kind}", "{dim} {kind} {length} ft"],
        related=["screws"]),
    "vinyl_plank": dict(
        title="{brand} {color} {wood} 7.5 in. W x 48 in. L {kind} Luxury Vinyl Plank Flooring ({sqft} sq. ft. / case)",
        attrs=dict(color=["Driftwood", "Natural", "Espresso", "Gray Wash", "Honey"], wood=["Oak", "Hickory", "Maple"],
                   kind=[("Click Lock", "click lock"), ("Glue Down", "glue down"),
                         ("Waterproof Rigid Core", "waterproof")],
                   sqft=["19.8", "23.6", "26.4"]),
        queries=["{color} vinyl plank flooring", "{kind} vinyl flooring", "{wood} luxury vinyl plank",
                 "{color} {wood} flooring"],
        related=["tile"]),
    "tile": dict(
        title="{brand} {color} {size} {material} {use} Tile ({sqft} sq. ft. / case)",
        attrs=dict(color=["White", "Carrara Marble Look", "Charcoal", "Beige", "Sea Glass Blue"],
                   size=[("12 in. x 24 in.", "12x24"), ("3 in. x 6 in. Subway", "subway"),
                         ("2 in. x 2 in. Mosaic", "mosaic")],
                   material=["Porcelain", "Ceramic", "Glass"], use=["Floor and Wall", "Wall"],
                   sqft=["10.76", "12.5", "15.5"]),
        queries=["{color} {size} tile", "{material} {use} tile {size}", "{material} {size} tile",
                 "{color} {material} tile"],
        related=["vinyl_plank"]),
    "interior_door": dict(
        title="{brand} {width} in. x 80 in. {style} {finish} {material} Prehung {side} Interior Door",
        attrs=dict(width=["24", "28", "30", "32", "36"],
                   style=[("2-Panel", "2 panel"), ("6-Panel", "6 panel"), ("Shaker", "shaker"), ("Flush", "flush")],
                   finish=["Primed White", "Unfinished", "Stained Walnut"],
                   material=[("Hollow Core Composite", "hollow core"), ("Solid Core MDF", "solid core")],
                   side=[("Left-Hand", "left hand"), ("Right-Hand", "right hand")]),
        queries=["{width} inch interior door", "{style} interior door {finish}", "prehung door {side} {width}",
                 "{material} {style} door"],
        related=["door_lock"]),
    "water_heater": dict(
        title="{brand} {cap}-Gal. {height} {fuel} Tank Water Heater with {years}-Year Warranty",
        attrs=dict(cap=["30", "40", "50"], height=["Short", "Tall"],
                   fuel=[("Electric", "electric"), ("Natural Gas", "gas"), ("Liquid Propane", "propane")],
                   years=["6", "9", "12"]),
        queries=["{cap} gallon {fuel} water heater", "{fuel} water heater", "{cap} gal {height} water heater",
                 "{brand} water heater"],
        related=["toilet"]),
    "toilet": dict(
        title="{brand} {model} 2-Piece {gpf} GPF Single Flush {bowl} Toilet in {color}",
        attrs=dict(gpf=["1.28", "1.6"], bowl=["Elongated", "Round"], color=["White", "Biscuit", "Bone"]),
        queries=["{bowl} toilet", "{color} {bowl} toilet", "{gpf} gpf toilet", "{brand} toilet {color}"],
        related=["vanity", "water_heater"]),
    "vanity": dict(
        title="{brand} {model} {width} in. W x 22 in. D Bath Vanity in {color} with {top} Vanity Top in White",
        attrs=dict(width=["24", "30", "36", "48", "60"], color=["White", "Espresso", "Gray", "Navy Blue"],
                   top=["Cultured Marble", "Quartz", "Engineered Stone"]),
        queries=["{width} inch vanity", "{color} bathroom vanity", "{width} in bath vanity with top",
                 "{color} vanity {top} top"],
        related=["bath_faucet", "toilet"]),
    "grill": dict(
        title="{brand} {burners}-Burner {fuel} Grill in {finish} with Side Burner",
        attrs=dict(burners=["2", "3", "4", "5"], fuel=[("Propane Gas", "propane"), ("Natural Gas", "natural gas")],
                   finish=["Stainless Steel", "Black", "Black and Stainless"]),
        queries=["{burners} burner gas grill", "{fuel} grill", "{finish} {burners} burner grill", "{brand} grill"],
        related=[]),
    "mower": dict(
        title="{brand} {deck} in. {power} {drive} Walk-Behind Lawn Mower",
        attrs=dict(deck=["20", "21", "22"],
                   power=[("Gas", "gas"), ("40-Volt Lithium-Ion Battery", "battery"), ("Corded Electric", "electric")],
                   drive=[("Push", "push"), ("Self-Propelled", "self propelled")]),
        queries=["{drive} mower", "{power} lawn mower", "{deck} inch {power} mower", "{brand} {drive} lawn mower"],
        related=["garden_hose"]),
    "garden_hose": dict(
        title="{brand} {dia} in. Dia x {length} ft. {grade} {material} Garden Hose",
        attrs=dict(dia=["1/2", "5/8", "3/4"], length=["25", "50", "75", "100"],
                   grade=[("Heavy-Duty", "heavy duty"), ("Medium-Duty", "medium duty"), ("Lightweight", "light")],
                   material=["Rubber", "Vinyl", "Hybrid Polymer"]),
        queries=["{length} ft garden hose", "{material} garden hose", "{grade} hose {length} ft",
                 "{dia} inch hose"],
        related=["mower", "mulch"]),
    "shelving": dict(
        title=("{brand} {tiers}-Tier {material} Garage Storage Shelving Unit in {color} "
               "({w} in. W x 72 in. H x 24 in. D)"),
        attrs=dict(tiers=["4", "5"], material=[("Steel", "metal"), ("Plastic", "plastic"), ("Wire", "wire")],
                   color=["Black", "Gray", "Chrome"], w=["36", "48", "60"]),
        queries=["{tiers} shelf storage unit", "{material} shelving", "garage shelving {color}",
                 "{w} inch wide {material} shelves"],
        related=["ladder"]),
    "electrical": dict(
        title="{brand} {amp} Amp {kind} in {color} ({pack}-Pack)",
        attrs=dict(amp=["15", "20"],
                   kind=[("Tamper-Resistant Duplex Outlet", "outlet"), ("GFCI Outlet", "gfci"),
                         ("Single-Pole Toggle Light Switch", "toggle switch"),
                         ("Decorator Rocker Light Switch", "rocker switch"), ("USB Charger Outlet", "usb outlet")],
                   color=["White", "Light Almond", "Black", "Ivory"], pack=["1", "3", "10"]),
        queries=["{kind} {color}", "{amp} amp {kind}", "{color} {kind} {pack} pack", "{brand} {kind}"],
        related=["smoke_alarm"]),
    "smoke_alarm": dict(
        title="{brand} {power} Smoke {kind} with {feat}",
        attrs=dict(power=[("Hardwired", "hardwired"), ("Battery-Operated", "battery"),
                          ("10-Year Sealed Battery", "10 year")],
                   kind=[("Alarm", "detector"), ("and Carbon Monoxide Combination Alarm", "and co detector")],
                   feat=["Voice Alert", "Test/Silence Button", "Escape Light"]),
        queries=["{power} smoke {kind}", "smoke {kind}", "{brand} smoke alarm {power}"],
        related=["electrical"]),
    "door_lock": dict(
        title="{brand} {model} {finish} {kind}",
        attrs=dict(finish=["Satin Nickel", "Matte Black", "Venetian Bronze", "Polished Brass"],
                   kind=[("Keyed Entry Door Knob", "entry knob"), ("Single Cylinder Deadbolt", "deadbolt"),
                         ("Keypad Electronic Deadbolt", "keypad deadbolt"),
                         ("Passage Hall/Closet Door Lever", "passage lever"),
                         ("Wi-Fi Smart Lock with Touchscreen", "smart lock")]),
        queries=["{finish} {kind}", "{kind}", "{brand} {kind} {finish}"],
        related=["interior_door"]),
    "caulk": dict(
        title="{brand} {size} oz. {color} {kind} Caulk",
        attrs=dict(size=["2.8", "5.5", "10.1"], color=["White", "Clear", "Almond", "Gray"],
                   kind=[("Kitchen and Bath Silicone", "silicone"), ("Paintable Acrylic Latex", "paintable"),
                         ("Window and Door Polyurethane", "polyurethane")]),
        queries=["{color} {kind} caulk", "{kind} caulk", "{kind} sealant {color} {size} oz"],
        related=["paint"]),
    "insulation": dict(
        title="{brand} R-{r} {kind} Fiberglass Insulation Roll {w} in. x {l} ft.",
        attrs=dict(r=["13", "19", "30", "38"], kind=[("Kraft Faced", "kraft faced"), ("Unfaced", "unfaced")],
                   w=["15", "23"], l=["25", "32", "40"]),
        queries=["r{r} insulation", "{kind} insulation r{r}", "insulation roll {w} inch", "r-{r} {kind}"],
        related=[]),
    "ladder": dict(
        title="{brand} {h} ft. {material} {kind} Ladder with {load} lb. Load Capacity",
        attrs=dict(h=["4", "6", "8", "16", "24"], material=["Fiberglass", "Aluminum"],
                   kind=[("Step", "step"), ("Extension", "extension"), ("Multi-Position", "multi position")],
                   load=["225", "250", "300", "375"]),
        queries=["{h} ft {kind} ladder", "{material} {kind} ladder", "{h} foot ladder {load} lb"],
        related=["shelving"]),
    "refrigerator": dict(
        title="{brand} {cuft} cu. ft. {style} Refrigerator in {finish}",
        attrs=dict(cuft=["18.2", "21.8", "25.5", "28.1"],
                   style=[("French Door", "french door"), ("Side by Side", "side by side"),
                          ("Top Freezer", "top freezer"), ("Bottom Freezer", "bottom freezer")],
                   finish=[("Stainless Steel", "stainless"),
                           ("Fingerprint Resistant Black Stainless", "black stainless"),
                           ("White", "white"), ("Black", "black")]),
        queries=["{style} refrigerator {finish}", "{finish} fridge", "{cuft} cu ft refrigerator",
                 "{brand} {style} refrigerator"],
        related=["microwave"]),
    "microwave": dict(
        title="{brand} {cuft} cu. ft. {kind} Microwave in {finish} with Sensor Cooking",
        attrs=dict(cuft=["0.9", "1.1", "1.6", "1.9"],
                   kind=[("Over the Range", "over the range"), ("Countertop", "countertop"), ("Built-In", "built in")],
                   finish=[("Stainless Steel", "stainless"), ("White", "white"), ("Black", "black")]),
        queries=["{kind} microwave {finish}", "{kind} microwave", "{finish} microwave {cuft} cu ft"],
        related=["refrigerator"]),
    "mulch": dict(
        title="{brand} {size} cu. ft. {kind}",
        attrs=dict(size=["0.5", "1", "1.5", "2"],
                   kind=[("Red Shredded Hardwood Mulch", "red mulch"), ("Brown Rubber Mulch", "rubber mulch"),
                         ("All Purpose Potting Soil", "potting soil"),
                         ("Garden Soil for Vegetables and Herbs", "garden soil"),
                         ("Cactus, Palm and Citrus Potting Mix", "cactus soil")]),
        queries=["{kind}", "{kind} {size} cu ft", "{brand} {kind}"],
        related=["garden_hose"]),
}
PER_CATEGORY = 13
N_TRAIN, N_DEV, N_EXTRA_SHOP = 100, 50, 120
QUESTIONS = [  # how-to questions for the unlabeled log (its real counterpart mixes in web questions)
    "how to fix a leaking kitchen faucet", "what size screws for deck boards", "how long does paint take to dry",
    "best insulation for attic", "how to replace a toilet flapper", "what is a gfci outlet",
    "how to install vinyl plank flooring", "difference between satin and eggshell paint",
    "how often to replace smoke detector", "what r value insulation for walls", "how to hang a prehung door",
    "gas vs electric water heater cost", "how to caulk a bathtub", "what size ladder for a two story house",
    "how to choose a ceiling fan size", "is pressure treated wood safe for garden beds",
    "how to clean grout on tile floor", "how many lumens is a 60 watt bulb", "why is my mower not starting",
    "how to store a garden hose in winter", "what is the best mulch for flower beds",
    "how to install a deadbolt lock", "how deep should a bathroom vanity be", "can you paint over wallpaper",
    "how to level a refrigerator", "what does gpf mean on a toilet", "how to reset a tripped breaker",
    "how to remove old caulk", "how to anchor shelves to a wall", "what size drill bit for a 1/4 anchor",
]


def _forms(v):
    return v if isinstance(v, tuple) else (v, v.lower())


def _typo(rng: random.Random, text: str) -> str:
    """One shopper-style typo: swap two adjacent letters, or drop one, in a word of >= 5 letters."""
    words = text.split()
    cands = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not cands:
        return text
    i = rng.choice(cands)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:] if rng.random() < 0.5 else w[:j] + w[j + 1:]
    return " ".join(words)


def make_products(rng: random.Random):
    """-> list of dicts: product_id, title, cat, and the chosen (title form, query form) per attribute."""
    products, seen, pid = [], set(), 300001
    for cat, spec in CATEGORIES.items():
        brands = rng.sample(BRANDS, 4)
        made = tries = 0
        while made < PER_CATEGORY and tries < 500:
            tries += 1
            a = {"brand": (b := rng.choice(brands), b.lower()), "model": (m := rng.choice(MODELS), m.lower())}
            for k, vals in spec["attrs"].items():
                a[k] = _forms(rng.choice(vals))
            title = " ".join(spec["title"].format(**{k: v[0] for k, v in a.items()}).split())
            if title in seen:
                continue
            seen.add(title)
            products.append(dict(product_id=str(pid), title=title, cat=cat, attrs=a))
            pid += 1
            made += 1
    return products


def _fields(template: str) -> list[str]:
    import string
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def grade(rng: random.Random, query: dict, p: dict) -> float | None:
    """Relevance of product p for a query (mean of three simulated raters), None if not judged."""
    if p["cat"] == query["cat"]:
        names = query["fields"]
        hit = sum(p["attrs"][f][1] == query["values"][f] for f in names)
        if hit == len(names):
            return rng.choice([3.0, 3.0, 3.0, 2.67])
        if hit > 0:
            return rng.choice([2.0, 2.33, 2.33, 2.67])
        return rng.choice([1.67, 1.67, 2.0, 1.33])
    if p["cat"] in CATEGORIES[query["cat"]]["related"]:
        return rng.choice([1.0, 1.0, 1.33])
    return None


def make_queries(rng: random.Random, products, n: int, seen: set):
    by_cat: dict[str, list] = {}
    for p in products:
        by_cat.setdefault(p["cat"], []).append(p)
    cats = list(CATEGORIES)
    out = []
    while len(out) < n:
        cat = rng.choice(cats)
        tmpl = rng.choice(CATEGORIES[cat]["queries"])
        seed = rng.choice(by_cat[cat])
        fields = _fields(tmpl)
        values = {f: seed["attrs"][f][1] for f in fields}
        text = " ".join(tmpl.format(**values).split())
        if rng.random() < 0.12:
            text = _typo(rng, text)
        if text in seen or not text:
            continue
        seen.add(text)
        out.append(dict(text=text, cat=cat, fields=fields, values=values, seed=seed["product_id"]))
    return out


def judge(rng: random.Random, query: dict, products) -> list[tuple[str, float]]:
    """2-9 judged products: the seed, up to 3 other exact matches, up to 3 partial, 0-2 related."""
    graded = [(p, grade(rng, query, p)) for p in products]
    graded = [(p, g) for p, g in graded if g is not None]
    exact = [p for p, g in graded if g >= 2.67 and p["product_id"] != query["seed"]]
    partial = [p for p, g in graded if 1.5 < g < 2.67]
    related = [p for p, g in graded if g < 1.5]
    pick = [next(p for p, _ in graded if p["product_id"] == query["seed"])]
    pick += rng.sample(exact, min(len(exact), rng.randint(0, 3)))
    pick += rng.sample(partial, min(len(partial), rng.randint(1, 3)))
    pick += rng.sample(related, min(len(related), rng.randint(0, 2)))
    grades = {p["product_id"]: g for p, g in graded}
    grades[query["seed"]] = 3.0  # the query was written from this product
    return sorted(((p["product_id"], grades[p["product_id"]]) for p in pick), key=lambda x: int(x[0]))


def _write(name: str, header: list[str], rows) -> None:
    path = os.path.join(HERE, name)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writerow(header)
        w.writerows(rows)


def main() -> None:
    rng = random.Random(SEED)
    products = make_products(rng)
    seen: set = set()
    labelled = make_queries(rng, products, N_TRAIN + N_DEV, seen)
    splits = {"train": labelled[:N_TRAIN], "dev": labelled[N_TRAIN:]}
    _write("products.tsv", ["product_id", "title"], [(p["product_id"], p["title"]) for p in products])
    qid = 0
    for split, qs in splits.items():
        qrows, rrows = [], []
        for q in qs:
            qrows.append((str(qid), q["text"]))
            rrows += [(str(qid), pid, str(g)) for pid, g in judge(rng, q, products)]
            qid += 1
        _write(f"queries_{split}.tsv", ["query_id", "query"], qrows)
        _write(f"qrels_{split}.tsv", ["query_id", "product_id", "relevance"], rrows)
    extra = make_queries(rng, products, N_EXTRA_SHOP, seen)
    log = [("sample-shop-labelled", q["text"]) for q in labelled]
    log += [("sample-shop", q["text"]) for q in extra] + [("sample-howto", q) for q in QUESTIONS]
    _write("unlabeled_queries.tsv", ["source", "query"], log)
    print(f"wrote {len(products)} products, {N_TRAIN}/{N_DEV} train/dev queries, {len(log)} log queries "
          f"to {HERE}")


if __name__ == "__main__":
    main()
