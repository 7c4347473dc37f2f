"""Run with: python3 test_calc.py"""

from calc import add, multiply


def test_add():
    assert add(2, 3) == 5, f"add(2, 3) should be 5, got {add(2, 3)}"


def test_multiply():
    assert multiply(4, 5) == 20, f"multiply(4, 5) should be 20, got {multiply(4, 5)}"


if __name__ == "__main__":
    failed = 0
    for test in (test_add, test_multiply):
        try:
            test()
            print(f"ok   {test.__name__}")
        except AssertionError as exc:
            failed += 1
            print(f"FAIL {test.__name__}: {exc}")
    raise SystemExit(1 if failed else 0)
