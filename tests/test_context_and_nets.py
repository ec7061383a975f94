import torch

from metavae.data.context import Context, sample_without_replacement, subset_index
from metavae.nn import MLP, GroupedMLP, SetEncoder


def _encoder() -> SetEncoder:
    return SetEncoder(MLP((12, 16, 8), activation="leaky_relu", flatten_from=1))


def test_sample_without_replacement_rows_are_distinct_and_uniform():
    gen = torch.Generator().manual_seed(0)
    idx = sample_without_replacement(20_000, 10, 3, gen)
    assert idx.shape == (20_000, 3)
    assert all(len(set(r)) == 3 for r in idx[:500].tolist())
    freq = torch.bincount(idx.flatten(), minlength=10).float() / idx.numel()
    torch.testing.assert_close(freq, torch.full((10,), 0.1), atol=0.01, rtol=0)


def test_subset_index_stays_in_its_group_pool():
    idx = subset_index(3, 4, 7, 5, torch.Generator().manual_seed(1))
    group = torch.arange(3).repeat_interleave(4)[:, None]
    assert ((idx // 7) == group).all()
    dense = subset_index(2, 3, 0, 4)
    assert dense.flatten().tolist() == list(range(24))


def test_set_summary_is_permutation_invariant():
    enc = _encoder()
    sets = torch.randn(5, 6, 12)
    perm = torch.randperm(6)
    torch.testing.assert_close(enc(sets), enc(sets[:, perm]))


def test_set_summary_independent_of_batch():
    enc = _encoder()
    sets = torch.randn(9, 6, 12)
    alone = torch.cat([enc(sets[i : i + 1]) for i in range(9)])
    torch.testing.assert_close(enc(sets), alone)
    torch.testing.assert_close(enc(sets[:2]), enc(sets)[:2])


def test_set_summary_mean_over_set_axis_not_batch():
    enc = _encoder()
    element = torch.randn(1, 1, 12)
    for n in (1, 3, 10):
        for b in (1, 7):
            out = enc(element.expand(b, n, 12))
            torch.testing.assert_close(out, enc.element_net(element[0]).expand(b, -1))
    # the mean: equal to the average of element embeddings of that set only
    sets = torch.randn(4, 5, 12)
    expected = enc.element_net(sets.reshape(20, 12)).view(4, 5, -1).mean(1)
    torch.testing.assert_close(enc(sets), expected)


def test_shared_pool_context_equals_dense_sets():
    enc = _encoder()
    pool = torch.randn(10, 12)
    index = torch.tensor([[0, 3, 5], [1, 3, 9], [2, 2, 8]])
    torch.testing.assert_close(enc(Context(pool, index)), enc(pool[index]))
    torch.testing.assert_close(enc(Context(pool, index)).narrow(0, 1, 1), enc(Context(pool, index).select(torch.tensor([1]))))


def _grouped_reference(net: GroupedMLP, h, group):
    out = []
    for row, g in zip(h, group.tolist()):
        a = row[None]
        for i, (w, b) in enumerate(zip(net.weights, net.biases)):
            a = a @ w[g] + b[g]
            if i < len(net.weights) - 1:
                a = torch.relu(a)
        out.append(a)
    return torch.cat(out)


def test_grouped_mlp_matches_per_group_loop_equal_and_unequal_groups():
    net = GroupedMLP(4, (3, 8, 5))
    h = torch.randn(12, 3)
    for group in (torch.arange(4).repeat_interleave(3), torch.tensor([2, 0, 2, 2, 3, 0, 2, 2, 2, 3, 2, 2])):
        torch.testing.assert_close(net(h, group), _grouped_reference(net, h, group))


def test_grouped_mlp_groups_are_independent():
    net = GroupedMLP(3, (3, 4, 2))
    h = torch.randn(6, 3)
    group = torch.tensor([0, 1, 2, 0, 1, 2])
    net(h, group)[group == 1].sum().backward()
    assert net.weights[0].grad[1].abs().sum() > 0
    assert net.weights[0].grad[0].abs().sum() == 0 and net.weights[0].grad[2].abs().sum() == 0
