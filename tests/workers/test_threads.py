"""The pool's threads are all started before the first job, and are idle afterwards."""

from concurrent.futures import ThreadPoolExecutor

from workers.threads import start_all_threads


def test_every_thread_starts_and_is_free_for_jobs():
    with ThreadPoolExecutor(max_workers=4) as executor:
        start_all_threads(executor, 4, timeout_s=5)
        assert len(executor._threads) == 4
        assert executor.submit(lambda: 42).result(timeout=5) == 42
        assert len(executor._threads) == 4  # the job ran on a started thread


def test_a_count_above_the_pool_limit_gives_up_after_the_timeout():
    with ThreadPoolExecutor(max_workers=2) as executor:
        start_all_threads(executor, 3, timeout_s=0.2)  # only 2 of 3 can wait together: the barrier breaks
        assert len(executor._threads) == 2
        assert executor.submit(lambda: 7).result(timeout=5) == 7
