def test_distribution(check_distribution):
    check_distribution("mugv-retrieval", "mugv.retrieval")
