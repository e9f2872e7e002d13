"""spark-submit entrypoint: spark-submit spark_jobs/score.py --config conf/demo_text.yaml"""

import sys

from sparkforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
