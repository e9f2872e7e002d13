"""spark-submit entrypoint: spark-submit spark_jobs/pipeline.py --config conf/demo_text.yaml"""

import sys

from sparkforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
