"""Correct solutions of lab 07's and lab 07b's exercises written in other styles than
labkit's reference (vectorised or loops, NumPy, another tie rule's key): graded over many
seeds with the other labs' in ``test_alternative_solutions``, and in practice mode, where a
check prints its one line, in ``test_hardware``."""

import numpy as np
import torch

from labkit.hardware.sparseconv import kernel_offsets

# --- lab 07 ---------------------------------------------------------------------------


def encode_vectorised(column_codes):
    rows = column_codes.nonzero().flatten()
    runs = rows - torch.cat([torch.tensor([-1]), rows[:-1]]) - 1
    entries = runs // 16 + 1  # padding entries, then the non-zero
    last = entries.cumsum(0) - 1
    v = torch.zeros(int(entries.sum()), dtype=torch.uint8)
    z = torch.full_like(v, 15)
    v[last] = column_codes[rows].to(torch.uint8)
    z[last] = (runs % 16).to(torch.uint8)
    return v, z


def encode_with_divmod(column_codes):
    v, z, previous = [], [], -1
    for row, code in enumerate(column_codes.tolist()):
        if code:
            paddings, run = divmod(row - previous - 1, 16)
            v += [0] * paddings + [code]
            z += [15] * paddings + [run]
            previous = row
    return torch.tensor(v, dtype=torch.uint8), torch.tensor(z, dtype=torch.uint8)


def lockstep_loops(encoded, x):
    work = [0] * len(encoded.pes)
    cycles = 0
    for j in range(len(x)):
        if x[j] != 0:
            counts = [int(pe.column_pointers[j + 1] - pe.column_pointers[j])
                      for pe in encoded.pes]
            cycles += max(counts)
            work = [w + c for w, c in zip(work, counts, strict=True)]
    return cycles, torch.tensor(work, dtype=torch.int64)


def lockstep_numpy(encoded, x):
    entries = np.stack([np.diff(pe.column_pointers.numpy()) for pe in encoded.pes])
    active = entries[:, x.numpy() != 0]
    cycles = active.max(axis=0).sum() if active.size else np.int64(0)  # a numpy.int64
    return cycles, torch.from_numpy(active.sum(axis=1).astype(np.int64))


def lockstep_as_a_list(encoded, x):
    entries = torch.stack([pe.column_pointers[1:] - pe.column_pointers[:-1]
                           for pe in encoded.pes])
    active = entries * (x != 0)
    return [active.max(dim=0).values.sum(), active.sum(dim=1)]  # cycles a 0-d tensor


# --- lab 07b --------------------------------------------------------------------------


def metadata_loops(weight):
    rows, columns = weight.shape
    metadata = torch.zeros(rows, (columns + 7) // 8, dtype=torch.uint8)
    for r in range(rows):
        positions = []
        for start in range(0, columns, 4):
            group = weight[r, start:start + 4].tolist()
            kept = [i for i in range(4) if group[i] != 0]
            kept += [i for i in range(4) if group[i] == 0][:2 - len(kept)]
            positions += sorted(kept)
        for b in range(0, len(positions), 4):
            metadata[r, b // 4] = sum(p << (2 * k) for k, p in enumerate(positions[b:b + 4]))
    return metadata


def metadata_topk_of_a_key(weight):
    """Rank each position by (non-zero, lower index) with a key no two share: topk needs
    no tie rule then."""
    rows, columns = weight.shape
    groups = weight.reshape(rows, -1, 4)
    key = (groups != 0).long() * 8 + (3 - torch.arange(4))
    positions = key.topk(2, dim=-1).indices.sort(dim=-1).values.reshape(rows, -1)
    padded = torch.zeros(rows, -(-positions.shape[1] // 4) * 4, dtype=torch.long)
    padded[:, :positions.shape[1]] = positions
    weights = torch.tensor([1, 4, 16, 64])
    return (padded.reshape(rows, -1, 4) * weights).sum(dim=-1).to(torch.uint8)


def kernel_map_broadcast(coords, kernel_size):
    pairs = []
    for offset in kernel_offsets(kernel_size):
        same = (coords[:, None, :] == coords[None, :, :] + offset).all(dim=-1)
        pairs.append(same.nonzero())  # rows (i, o) with coords[i] == coords[o] + d
    return pairs


def kernel_map_from_the_inputs(coords, kernel_size):
    table = {tuple(c): o for o, c in enumerate(coords.tolist())}
    result = []
    for offset in kernel_offsets(kernel_size).tolist():
        found = []
        for i, c in enumerate(coords.tolist()):
            o = table.get(tuple(a - d for a, d in zip(c, offset, strict=True)))
            if o is not None:
                found.append([i, o])
        result.append(torch.tensor(found, dtype=torch.long).reshape(-1, 2))
    return result
