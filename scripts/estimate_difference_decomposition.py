#!/usr/bin/python3
"""How many signed digits the column-difference decomposition could save on an archive's layers.

    /usr/bin/python3 scripts/estimate_difference_decomposition.py ARCHIVE.hgqt

For every dense kernel (mantissas aligned to the layer's largest exponent), prints the canonical
signed digits of the matrix and the cost of the best decomposition in which each output (or each
input) is computed as an earlier one plus a difference: a minimum spanning tree (Prim's algorithm)
over the outputs (inputs) and the all-zero vector, an edge costing the signed digits of the
difference plus one adder. An upper bound on what the decomposition saves before any sharing.
"""
import json
import sys

import h5py
import numpy as np


def naf_count(v):
    v = int(v)
    c = 0
    while v:
        if v & 1:
            v -= 2 - (v & 3)
            c += 1
        v >>= 1
    return c


def digits(vec):
    return sum(naf_count(x) for x in vec)


def spanning_tree_cost(rows):
    n = rows.shape[0]
    best = np.array([digits(r) for r in rows], dtype=float)  # from the all-zero root
    direct = int(best.sum())
    used = np.zeros(n, bool)
    total = 0
    for _ in range(n):
        i = int(np.argmin(np.where(used, np.inf, best)))
        used[i] = True
        total += best[i]
        for k in range(n):
            if not used[k]:
                best[k] = min(best[k], digits(rows[k] - rows[i]) + 1)
    return direct, int(total)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    model = json.load(open(path + "/model.json"))
    tensors = h5py.File(path + "/tensors.h5", "r")
    totals = np.zeros(3, dtype=np.int64)
    for layer in model["layers"]:
        if layer["type"] != "dense":
            continue
        g = tensors["layers/" + layer["name"] + "/kernel"]
        mant = g["mantissa"][:]
        expo = g["exponent"][:]
        n_in, n_out = layer["kernel"]["shape"]
        top = int(expo.max())
        c = np.array([int(m) << (top - int(e)) for m, e in zip(mant, expo)], dtype=object)
        c = c.reshape(n_in, n_out)
        d, by_out = spanning_tree_cost(c.T)
        _, by_in = spanning_tree_cost(c)
        totals += (d, by_out, by_in)
        print(f"{layer['name']}: {n_in} x {n_out}, {d} signed digits; outputs as differences "
              f"{by_out}, inputs as differences {by_in}")
    print(f"total: {totals[0]} signed digits; outputs as differences {totals[1]}, "
          f"inputs as differences {totals[2]}")


if __name__ == "__main__":
    main()
