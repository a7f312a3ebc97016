# The two entry points of the README. Both install what is missing first (scripts/setup.sh).
.PHONY: setup run bench test

setup:
	@bash scripts/setup.sh

# The main job: the supervised recipe until MAE lands (then recipes/mae.yaml).
run: setup
	.build/release/workbench run recipes/supervised.yaml

bench: setup
	@.build/release/workbench bench

# Release-mode tests: numeric code is too slow in debug builds.
test: setup
	swift test -c release --disable-swift-testing
