# The two commands of the README: `make demo` and `make test`.
.PHONY: install demo prepare test lint bench model clean

install:
	bash scripts/install.sh

prepare: install
	.venv/bin/callbot model base
	.venv/bin/callbot kb demo
	.venv/bin/callbot bot train
	.venv/bin/callbot compliance train
	.venv/bin/callbot complaint train

demo: prepare
	.venv/bin/callbot up

test: install
	bash scripts/test.sh

lint: install
	.venv/bin/ruff check .

model: install
	.venv/bin/callbot model base
	.venv/bin/callbot kb demo
	.venv/bin/callbot model release

bench: install
	.venv/bin/python -m benchmarks

clean:
	rm -rf var bot/models .pytest_cache
