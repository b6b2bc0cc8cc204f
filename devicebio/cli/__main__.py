import sys

from devicebio.cli.main import main

sys.exit(main())
