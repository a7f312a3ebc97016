# The two entry points of the README. Both install what is missing first (scripts/setup.sh).
.PHONY: setup run bench test

setup:
	@bash scripts/setup.sh

# The main job: MAE pretraining of the reference ViT, then linear probe, kNN and embeddings.
run: setup
	.build/release/workbench run recipes/mae.yaml

bench: setup
	@.build/release/workbench bench

# Release-mode tests: numeric code is too slow in debug builds.
test: setup
	swift test -c release --disable-swift-testing
