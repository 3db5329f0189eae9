"""`python -m cli …` is `wanlora …`; `accelerate launch -m cli train …` trains on several GPUs."""

from cli.launch import main

main()
