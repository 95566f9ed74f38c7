import sys

from distillstudy.cli import main

sys.exit(main())
