"""Classifier, retrieval metrics and the nearest-neighbour index on known answers."""
import torch

from gmn_inr.tasks import (ClassifierConfig, NearestNeighbourIndex, accuracy, map_at_k, recall_at_k,
                           train_classifier)


def test_classifier_learns_separable_classes_and_generalises():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(200) % 4
    z = centres[y] + torch.randn(200, 16, generator=g)
    model = train_classifier(z[:150], y[:150], 4, ClassifierConfig(epochs=60, batch_size=32, hidden=(64, 32, 16)))
    assert accuracy(model, z[150:], y[150:]) > 0.9
    # labels with no relation to z cannot be learned beyond chance on held-out data
    y_rand = torch.randint(0, 4, (200,), generator=g)
    model = train_classifier(z[:150], y_rand[:150], 4, ClassifierConfig(epochs=60, batch_size=32, hidden=(64, 32, 16)))
    assert accuracy(model, z[150:], y_rand[150:]) < 0.6


def test_recall_and_map_on_a_hand_made_case():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gal = torch.tensor([[0.9, 0.1], [0.1, 0.9], [1.0, 0.05]])
    q_obj, g_obj = torch.tensor([7, 8]), torch.tensor([7, 9, 8])
    r = recall_at_k(q, q_obj, gal, g_obj, ks=(1, 2, 3))
    # query 7: nearest are gallery 2 (obj 8), then 0 (obj 7); query 8: nearest 1 (obj 9), 0, then 2 (obj 8)
    assert r == {"1": 0.0, "2": 0.5, "3": 1.0}
    labels_q, labels_g = torch.tensor([0, 1]), torch.tensor([0, 1, 0])
    assert map_at_k(q, labels_q, gal, labels_g, k=1) == 1.0
    excl = torch.tensor([[False, False, True], [False, False, False]])
    assert recall_at_k(q, q_obj, gal, g_obj, ks=(1,), exclude_self=excl)["1"] == 0.5


def test_nearest_neighbour_index():
    idx = NearestNeighbourIndex(torch.eye(3), ["a", "b", "c"])
    hits = idx.search(torch.tensor([0.1, 1.0, 0.0]), k=2)
    assert [k for k, _ in hits[0]] == ["b", "a"]


def test_object_ids_index_sorted_objects():
    from types import SimpleNamespace

    from gmn_inr.tasks import object_ids

    recs = [SimpleNamespace(object_id=o) for o in ("mug-2", "car-1", "mug-2", "bench-0")]
    assert object_ids(recs).tolist() == [2, 1, 2, 0]


def test_queries_in_gallery_keeps_the_queries_whose_object_the_gallery_holds():
    from gmn_inr.tasks import queries_in_gallery

    obj = torch.tensor([0, 1, 2, 0, 2])             # records 0..4, their objects
    assert queries_in_gallery([0, 1, 2], [3, 4], obj) == [0, 2]
    assert queries_in_gallery([1], [3, 4], obj) == []
