import torch

from rnnkit.data import bucket_batches, pad


def test_pad_shapes_values_and_mask():
    ids, mask = pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    ids, mask = pad([[1]], length=4)
    assert ids.shape == (1, 4) and mask.sum() == 1


def test_buckets_cover_every_example_once_and_group_similar_lengths():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (1000,), generator=g).tolist()
    batches = bucket_batches(lengths, batch_size=32, generator=g, bucket_factor=100)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert all(len(b) <= 32 for b in batches)
    # Within a batch lengths are nearly equal: padding wastes far less than random batching.
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert waste < 0.05 * sum(lengths)


def test_bucket_order_is_random_but_seeded():
    lengths = list(range(200))
    a = bucket_batches(lengths, 10, generator=torch.Generator().manual_seed(1))
    b = bucket_batches(lengths, 10, generator=torch.Generator().manual_seed(1))
    c = bucket_batches(lengths, 10, generator=torch.Generator().manual_seed(2))
    assert a == b and a != c


def test_unshuffled_buckets_are_sorted_longest_first():
    batches = bucket_batches([3, 9, 1, 7], batch_size=2, shuffle=False)
    assert batches == [[1, 3], [0, 2]]
