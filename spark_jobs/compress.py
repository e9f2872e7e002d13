"""spark-submit entrypoint: spark-submit spark_jobs/compress.py --config conf/demo_text.yaml"""

import sys

from sparkforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["compress", *sys.argv[1:]]))
