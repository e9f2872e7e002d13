"""spark-submit entrypoint: spark-submit spark_jobs/train.py --config conf/demo_text.yaml"""

import sys

from sparkforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
